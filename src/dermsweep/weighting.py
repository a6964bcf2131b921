"""Class weights for the loss, from the `class_weight` config. HAM10000 is 67% nv and 1% df."""
from __future__ import annotations

import numpy as np


def class_weights(cfg, y: np.ndarray, num_classes: int) -> dict[int, float] | None:
    counts = np.bincount(y, minlength=num_classes).astype(float)
    present = counts > 0
    if cfg.name == "none":
        return None
    n, k = counts.sum(), present.sum()
    w = np.ones(num_classes)
    if cfg.name == "balanced":
        w[present] = n / (k * counts[present])
    elif cfg.name == "sqrt":
        w[present] = np.sqrt(n / (k * counts[present]))
    elif cfg.name == "effective":
        beta = float(cfg.beta)
        w[present] = (1.0 - beta) / (1.0 - beta ** counts[present])
        w[present] *= k / w[present].sum()  # mean weight 1 over the classes present
    else:  # config validation catches this first
        raise ValueError(f"unknown class_weight {cfg.name!r}")
    return {i: float(w[i]) for i in range(num_classes)}
