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
        assert np.all(crossed.thresholds[mine] == gains.operating_point.threshold)
        assert crossed.chosen[fold] == {"fold": fold, **gains.to_meta()}
    assert crossed.values == scores(y, crossed.probabilities)
    flagged = crossed.probabilities[:, mel] >= crossed.thresholds  # each row by its fold's own threshold
    assert 0.6 < flagged[y == mel].mean() < 0.95  # near the 0.8 asked for, on rows no threshold saw


def test_a_cross_fitted_split_is_scored_by_each_rows_own_threshold():
    """The CV logs its out-of-fold figures from the cross-fitted rows: the operating point's rates and their
    interval read each row's fold threshold, not the shipped one."""
    from dermsweep.evaluation import bootstrap
    from dermsweep.evaluation.operating_point import OperatingPoint
    from dermsweep.training.gains import Gains
    from dermsweep.training.ship import Shipping

    y, lesions, look, rng = real_shaped(n=1200)
    views = {(0, False): np.log(probs_of(y, lesions, look, rng, 1.2))}
    shipped = OperatingPoint("mel", 0.9, 0.8, 0.5, 0.9)
    shipping = Shipping(None, Gains("none", 1.0, 0.0, operating_point=shipped), {"val": views})
    mel = NAMES.index("mel")
    assert shipping.threshold("val") == 0.9
    probs = shipping.probabilities["val"]
    thresholds = np.where(lesions % 2 == 0, 0.05, 0.5)  # two folds' own thresholds
    shipping.score_held_out("val", probs, thresholds)
    flagged = probs[:, mel] >= thresholds
    assert np.array_equal(shipping.threshold("val"), thresholds)
    found = bootstrap.intervals(y, probs, lesions, operating=bootstrap.Operating(mel, "mel", shipping.threshold("val")))
    assert found["mel_sensitivity"].value == pytest.approx(flagged[y == mel].mean())
    assert found["mel_specificity"].value == pytest.approx(1 - flagged[y != mel].mean())
    assert found["mel_sensitivity"].lo <= found["mel_sensitivity"].value <= found["mel_sensitivity"].hi
