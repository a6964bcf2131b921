"""Loss weights per class, one rule per `conf/class_weight/<name>.yaml`. HAM10000 is 67% nv and 1% df."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ..checks import Range
from ..options import Options

# (cfg, counts of the classes present in training) -> weights of those classes
Rule = Callable[[Any, np.ndarray], np.ndarray]
CLASS_WEIGHTS: Options[Rule] = Options("class_weight.name")


@CLASS_WEIGHTS.register("none")
def none(cfg, counts: np.ndarray) -> np.ndarray:
    """Every image weighs the same (Keras then gets no class_weight at all)."""
    return np.ones_like(counts)


@CLASS_WEIGHTS.register("balanced")
def balanced(cfg, counts: np.ndarray) -> np.ndarray:
    return counts.sum() / (len(counts) * counts)


@CLASS_WEIGHTS.register("sqrt")
def sqrt(cfg, counts: np.ndarray) -> np.ndarray:
    return np.sqrt(balanced(cfg, counts))


@CLASS_WEIGHTS.register("effective", beta=Range(0, 1, hi_open=True))
def effective(cfg, counts: np.ndarray) -> np.ndarray:
    beta = float(cfg.beta)
    w = (1.0 - beta) / (1.0 - beta**counts)
    return w * len(counts) / w.sum()  # mean weight 1 over the classes present


def class_weights(cfg, y: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """Keras' class_weight dict for labels `y`; classes absent from training keep weight 1."""
    rule = CLASS_WEIGHTS.get(cfg.name)
    if rule is none:
        return None
    counts = np.bincount(y, minlength=num_classes).astype(float)
    present = counts > 0
    w = np.ones(num_classes)
    w[present] = rule(cfg, counts[present])
    return {i: float(w[i]) for i in range(num_classes)}
