"""The one check of (labels, probabilities) pairs before anything scores them."""

from __future__ import annotations

import numpy as np


def labelled_probabilities(
    y_true, probs, what: str, error: type[Exception] = ValueError
) -> tuple[np.ndarray, np.ndarray]:
    """(labels (n,), probabilities (n, k) as float64) after checking they agree and are not empty; `what` names
    the caller's need in the message (e.g. "an operating point")."""
    y = np.asarray(y_true)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or y.ndim != 1 or len(y) != len(p):
        raise error(f"need labels (n,) and probabilities (n, k); got {y.shape} and {p.shape}")
    if not len(y):
        raise error(f"no images: {what} needs labelled predictions")
    return y, p
