"""A fold model far below its siblings: most likely one that failed to train (the recipe's 5-fold CV, seed 2: fold 3
early-stopped at 0.571 where the other four reached 0.66-0.74, and cost the bag about 2 points out of fold). It is
in the bag either way; the CV says so in its console, description and a tag, so nobody has to read every fold.

A fold is weak when it lies more than LIMIT times the noise below the mean of the other folds; the noise is the
other folds' spread together with the fold's own sampling error (its objective's bootstrap interval), so two or three
folds that agree closely do not make an ordinary fold look weak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

LIMIT = 3.0  # a fold this far below the others by chance alone: about 1 in 700 (one-sided, normal noise)


@dataclass(frozen=True)
class WeakFold:
    fold: int  # 0-based
    value: float
    others_mean: float
    noise: float

    def describe(self, objective: str) -> str:
        below = abs(self.others_mean - self.value) / self.noise
        return (
            f"fold {self.fold + 1}: {objective} {self.value:.3f} against the other folds' {self.others_mean:.3f} "
            f"({below:.1f} x the noise of {self.noise:.3f})"
        )


def weak_folds(values: np.ndarray, sampling_se: list[float | None], direction: str) -> list[WeakFold]:
    """The folds whose objective is worse than the others' mean by more than LIMIT x the noise (`sampling_se`: each
    fold's standard error on its own images, None where its run logged no interval for the objective)."""
    values = np.asarray(values, dtype=np.float64)
    sign = 1.0 if direction == "maximize" else -1.0
    found = []
    for i, value in enumerate(values):
        others = np.delete(values, i)
        if len(others) == 0:
            continue
        spread = float(others.std(ddof=1)) if len(others) > 1 else 0.0
        se = sampling_se[i]
        own = se if se is not None and math.isfinite(se) else 0.0
        noise, others_mean = math.hypot(spread, own), float(others.mean())
        if noise > 0 and sign * (others_mean - value) > LIMIT * noise:
            found.append(WeakFold(i, float(value), others_mean, noise))
    return found


def tag_value(folds: list[int]) -> str:
    """A run's tag of folds (run_format.WEAK_FOLDS, RETRIED_FOLDS) from 0-based folds: 1-based, e.g. "3" or "2,4"."""
    return ",".join(str(fold + 1) for fold in sorted(set(folds)))


def told(tag: str) -> str:
    """The weak-folds tag as a person reads it, where only the tag is at hand (`dermsweep runs`, `promote`)."""
    return f"{_which(tag)} far below its other folds (may have failed to train)"


def told_retried(tag: str) -> str:
    """The retried-folds tag as a person reads it."""
    return f"{_which(tag)} trained again with another seed (its first model was far below the other folds)"


def _which(tag: str) -> str:
    folds = tag.split(",")
    return f"fold {folds[0]}" if len(folds) == 1 else f"folds {', '.join(folds)}"
