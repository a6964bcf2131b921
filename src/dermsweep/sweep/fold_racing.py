"""Racing over cross-validation folds: an Optuna pruner that stops a trial after any fold but the last when it is
clearly worse than the best finished trial, given the noise between folds.

A cross-validation trial (training/cross_validation.py) reports its running mean after each fold (step = fold).
After f folds the trial's mean is uncertain by s / sqrt(f), where s is the spread of one fold's objective around
its trial's mean (pooled over the finished trials), and the best finished trial's mean by s / sqrt(k). The trial is
pruned when even its optimistic bound stays on the wrong side of the best:

    mean_f + z * s * sqrt(1/f + 1/k)  <  best          (maximising; z = the normal quantile of `confidence`)

Folds are shared by the trials (the same lesions in fold i), which makes the difference less noisy than this unpaired
bound assumes: the rule errs on the side of letting a trial run on. Until `n_startup_trials` trials have finished
(or while every fold of theirs scored the same) nothing is pruned. Configure it in a sweep as

    pruner: {_target_: dermsweep.sweep.fold_racing.FoldRacingPruner, confidence: 0.9}
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

import numpy as np
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState


class FoldRacingPruner(BasePruner):
    def __init__(self, confidence: float = 0.9, n_startup_trials: int = 1) -> None:
        if not 0.5 <= confidence < 1:
            raise ValueError(f"confidence={confidence}: must be in [0.5, 1)")
        if n_startup_trials < 1:
            raise ValueError(f"n_startup_trials={n_startup_trials}: must be >= 1")
        self.confidence = confidence
        self.n_startup_trials = n_startup_trials

    def prune(self, study: Any, trial: FrozenTrial) -> bool:
        mine = fold_values(trial)
        if not mine:
            return False
        finished = [
            values
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if len(values := fold_values(t)) >= 2
        ]
        if len(finished) < self.n_startup_trials:
            return False
        spread = pooled_spread(finished)
        if not spread > 0:
            return False
        maximise = study.direction == StudyDirection.MAXIMIZE
        means = [float(np.mean(v)) for v in finished]
        best_index = int(np.argmax(means) if maximise else np.argmin(means))
        best, k = means[best_index], len(finished[best_index])
        margin = NormalDist().inv_cdf(self.confidence) * spread * math.sqrt(1 / len(mine) + 1 / k)
        mean = float(np.mean(mine))
        return mean + margin < best if maximise else mean - margin > best


def fold_values(trial: FrozenTrial) -> list[float]:
    """Each fold's objective, recovered from the running means a cross-validation trial reports (step = fold)."""
    running = trial.intermediate_values
    steps = sorted(running)
    if steps != list(range(len(steps))):
        return []  # not a cross-validation's reports (epochs, or gaps)
    out, total = [], 0.0
    for step in steps:
        value = running[step] * (step + 1) - total
        total += value
        out.append(value)
    return out


def pooled_spread(trials: list[list[float]]) -> float:
    """The pooled standard deviation of one fold's objective around its own trial's mean."""
    squares = sum(float(np.sum((np.asarray(v) - np.mean(v)) ** 2)) for v in trials)
    dof = sum(len(v) - 1 for v in trials)
    return math.sqrt(squares / dof) if dof > 0 else math.nan
