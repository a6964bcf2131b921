"""The out-of-fold figure with no choice made on the images it scores: each fold's out-of-fold rows go through gains
(views, temperature, prior adjustment, melanoma threshold) chosen on the other folds' rows only.

The bag ships gains chosen on all the out-of-fold images, and scoring them on those same images flatters it a
little (the prior adjustment's tau and the view set are fitted to them). Cross-fitting scores the whole procedure,
choice included, on images it did not see: the honest out-of-fold estimate to hold the test figure against (on the
shipped recipe's four CVs: optimism 1.7 points in-sample, 1.4 cross-fitted), and so the CV's `final_val/*` (what
sweeps, `runs` and the promotion gate rank on).
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
    thresholds: np.ndarray | None  # each row's operating-point threshold: its fold's own (None: no point)
    chosen: list[dict]  # each fold's gains, as its model's metadata would say them (Gains.to_meta)


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
    thresholds = np.full(len(y), np.nan)
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
            thresholds[mine] = point.threshold
        chosen.append({"fold": int(fold), **gains.to_meta()})
    return CrossFitted(out, scores(y, out), thresholds if point is not None else None, chosen)
