"""Racing over cross-validation folds: an Optuna pruner that stops a trial after any fold but the last when it is
clearly worse than the best finished trial, given the noise between folds.

A cross-validation trial (training/cross_validation.py) reports its running mean after each fold (step = fold).
Trials share their folds (the same lesions in fold i), so after f folds the trial is compared with the best finished
trial on those same f folds: d = mean of (mine_i - best_i). A fold's objective varies around its trial's mean by s
(pooled over the finished trials, with their degrees of freedom), so d varies by at most s * sqrt(2 / f) (less where
fold difficulty is shared, which pairing removes). The trial is pruned when even d's optimistic bound is behind:

    d + t * s * sqrt(2 / f)  <  0          (maximising; t = Student's quantile of `confidence` on the pooled dof)

Pairing matters: a trial compared unpaired with the best's mean is charged for its first fold being a hard one, and a
normal quantile on a spread from two or three folds prunes too often (a real search pruned a trial 1.9 points behind
the best on the same fold, well inside one fold's noise). Until `n_startup_trials` trials have finished (or while
every fold of theirs scored the same) nothing is pruned. Configure it in a sweep as

    pruner: {_target_: dermsweep.sweep.fold_racing.FoldRacingPruner, confidence: 0.9}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from optuna.pruners import BasePruner
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState
from scipy.stats import t as student_t


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
        spread, dof = pooled_spread(finished)
        if not spread > 0:
            return False
        maximise = study.direction == StudyDirection.MAXIMIZE
        means = [float(np.mean(v)) for v in finished]
        best = finished[int(np.argmax(means) if maximise else np.argmin(means))]
        shared = min(len(mine), len(best))  # the folds both ran
        difference = float(np.mean(mine[:shared]) - np.mean(best[:shared]))
        margin = float(student_t.ppf(self.confidence, dof)) * spread * math.sqrt(2 / shared)
        return difference + margin < 0 if maximise else difference - margin > 0


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


def pooled_spread(trials: list[list[float]]) -> tuple[float, int]:
    """The pooled standard deviation of one fold's objective around its own trial's mean, and its degrees of freedom."""
    squares = sum(float(np.sum((np.asarray(v) - np.mean(v)) ** 2)) for v in trials)
    dof = sum(len(v) - 1 for v in trials)
    return (math.sqrt(squares / dof) if dof > 0 else math.nan), dof
