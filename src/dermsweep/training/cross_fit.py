"""The out-of-fold figure with no choice made on the images it scores: each fold's out-of-fold rows go through gains
(views, temperature, prior adjustment, melanoma threshold) chosen on the other folds' rows only.

The bag ships gains chosen on all the out-of-fold images, and scoring them on those same images flatters it a
little (the prior adjustment's tau and the view set are fitted to them). Cross-fitting scores the whole procedure,
choice included, on images it did not see: the honest out-of-fold estimate to hold the test figure against (on the
shipped recipe's four CVs: optimism 1.7 points in-sample, 1.4 cross-fitted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..evaluation.metrics import scores
from .gains import View, choose_gains, probabilities
from .ship import priors


@dataclass(frozen=True)
class CrossFitted:
    probabilities: np.ndarray  # each row through the gains chosen without its fold
    values: dict[str, float]  # metrics.scores of those probabilities
    flagged: np.ndarray | None  # the operating point's class flagged, by each fold's own threshold (None: no point)
    chosen: list[str]  # each fold's gains, as a person reads them ("dihedral T1.05 tau0.45")

    def rates(self, y: np.ndarray, class_index: int) -> tuple[float, float]:
        """Sensitivity and specificity of the flags for `class_index`."""
        assert self.flagged is not None
        positive = y == class_index
        return float(self.flagged[positive].mean()), float((~self.flagged[~positive]).mean())


def cross_fit(
    inference,
    y: np.ndarray,
    views: dict[View, np.ndarray],
    fold_of_row: np.ndarray,
    groups: np.ndarray | None,
    class_names: list[str],
    objective: str,
) -> CrossFitted:
    """Gains chosen on all folds but one, applied to that one, for every fold (`inference`: the config's section)."""
    out = np.zeros((len(y), len(class_names)))
    flagged = np.zeros(len(y), dtype=bool)
    point, chosen = None, []
    for fold in np.unique(fold_of_row):
        rest, mine = fold_of_row != fold, fold_of_row == fold
        gains = choose_gains(
            inference,
            y[rest],
            {v: logits[rest] for v, logits in views.items()},
            priors(y[rest], len(class_names)),
            class_names,
            objective,
            None if groups is None else groups[rest],
        )
        out[mine] = probabilities(gains, {v: logits[mine] for v, logits in views.items()})
        point = gains.operating_point
        if point is not None:
            flagged[mine] = out[mine, class_names.index(point.class_name)] >= point.threshold
        chosen.append(f"{gains.views} T{gains.temperature:.2f} tau{gains.prior_tau:g}")
    return CrossFitted(out, scores(y, out), flagged if point is not None else None, chosen)
