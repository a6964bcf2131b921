"""training.cross_fit: every out-of-fold row is scored by gains chosen without its fold (no choice made on the
images it scores), and the operating point is read by each fold's own threshold."""

from __future__ import annotations

import numpy as np
import pytest
from omegaconf import OmegaConf

from dermsweep.evaluation.metrics import scores
from dermsweep.training.cross_fit import cross_fit
from dermsweep.training.gains import choose_gains, probabilities
from dermsweep.training.ship import priors
from helpers.predictions import K, probs_of, real_shaped

NAMES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
INFERENCE = OmegaConf.create(
    {
        "views": "auto",
        "calibrate": True,
        "prior_adjustment": True,
        "gain_confidence": 0.9,
        "operating_point": {"class_name": "mel", "sensitivity": 0.8},
    }
)


def test_each_folds_rows_go_through_gains_chosen_on_the_other_folds():
    y, lesions, look, rng = real_shaped(n=2400)
    flips = [(0, False), (0, True), (2, False), (2, True)]
    views = {v: np.log(probs_of(y, lesions, look, rng, 1.2)) for v in flips}  # 4 views: "flips" can be chosen
    inference = OmegaConf.merge(INFERENCE, {"views": "flips"})
    fold_of_row = lesions % 3  # a lesion's images stay in one fold
    crossed = cross_fit(inference, y, views, fold_of_row, lesions, NAMES, "val_balanced_accuracy")
    assert crossed.probabilities.shape == (len(y), K) and len(crossed.chosen) == 3
    mel = NAMES.index("mel")
    for fold in range(3):
        rest, mine = fold_of_row != fold, fold_of_row == fold
        gains = choose_gains(
            inference, y[rest], {v: x[rest] for v, x in views.items()}, priors(y[rest], K), NAMES,
            "val_balanced_accuracy", lesions[rest],
        )  # fmt: skip
        expected = probabilities(gains, {v: x[mine] for v, x in views.items()})
        np.testing.assert_allclose(crossed.probabilities[mine], expected)
        assert np.array_equal(crossed.flagged[mine], expected[:, mel] >= gains.operating_point.threshold)
    assert crossed.values == scores(y, crossed.probabilities)
    sensitivity, specificity = crossed.rates(y, mel)
    assert sensitivity == pytest.approx(crossed.flagged[y == mel].mean()) and 0.6 < sensitivity < 0.95
    assert specificity == pytest.approx(1 - crossed.flagged[y != mel].mean())
