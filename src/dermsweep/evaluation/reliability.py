"""Calibration of predicted probabilities: top-label expected calibration error (ECE), its per-bin table and the
reliability diagram.

Top-label: each image counts once, at the probability of its predicted class (its confidence), and is correct when
that class is the true one. Bins are equal-width over confidence, (lo, hi] with 0 in the first, and ECE is the mean
|accuracy - confidence| over bins weighted by how many images each holds (Guo et al. 2017). Equal-width bins are the
convention the literature reports; with few images the upper bins carry most of the weight, so read ECE with the
table's counts beside it.

NumPy, and matplotlib's object API without pyplot (like plots.py): figures can be drawn off the main thread.
"""

from __future__ import annotations

import numpy as np

from .inputs import labelled_probabilities

DEFAULT_BINS = 15


def expected_calibration_error(y_true: np.ndarray, probs: np.ndarray, bins: int = DEFAULT_BINS) -> float:
    """Top-label ECE in [0, 1] of integer labels (n,) and probabilities (n, k), over `bins` equal-width bins."""
    confidence, correct, index = _binned(y_true, probs, bins)
    counts = np.bincount(index, minlength=bins)
    gap_sums = np.abs(np.bincount(index, correct, bins) - np.bincount(index, confidence, bins))
    # sum_b (n_b / n) * |acc_b - conf_b| = sum_b |sum correct - sum confidence| / n: no division by empty bins.
    return float(gap_sums.sum() / counts.sum())


def reliability_table(y_true: np.ndarray, probs: np.ndarray, bins: int = DEFAULT_BINS) -> dict:
    """Per bin, as JSON-ready lists of `bins` entries each: `edges` ([lo, hi] of the bin), `confidence` (mean
    confidence), `accuracy` (share correct), `count` (images). Empty bins have count 0 and None (JSON null) for
    confidence and accuracy."""
    confidence, correct, index = _binned(y_true, probs, bins)
    counts = np.bincount(index, minlength=bins)
    conf_sums = np.bincount(index, confidence, bins)
    correct_sums = np.bincount(index, correct, bins)
    edges = np.linspace(0.0, 1.0, bins + 1)
    return {
        "edges": [[float(edges[b]), float(edges[b + 1])] for b in range(bins)],
        "confidence": [float(conf_sums[b] / counts[b]) if counts[b] else None for b in range(bins)],
        "accuracy": [float(correct_sums[b] / counts[b]) if counts[b] else None for b in range(bins)],
        "count": [int(c) for c in counts],
    }


def plot_reliability(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str, bins: int = DEFAULT_BINS):
    """One reliability diagram: accuracy against mean confidence per non-empty bin, a line per named curve (e.g.
    {"before": (y, probs), "after": (y, probs_calibrated)}), the diagonal of perfect calibration, ECE in the
    legend. Returns a matplotlib Figure (no pyplot)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 5.5))
    fig.subplots_adjust(left=0.13, right=0.97, bottom=0.11, top=0.92)  # fixed margins: no layout engine pass
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="grey", ls="--", lw=1, label="perfectly calibrated")
    for name, (y_true, probs) in curves.items():
        table = reliability_table(y_true, probs, bins)
        points = [(c, a) for c, a in zip(table["confidence"], table["accuracy"], strict=True) if c is not None]
        ece = expected_calibration_error(y_true, probs, bins)
        xs, ys = zip(*points, strict=True)  # never empty: every image falls in some bin
        ax.plot(xs, ys, marker="o", ms=4, label=f"{name} (ECE {ece:.3f})")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("confidence (top-class probability)")
    ax.set_ylabel("accuracy")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=8)
    return fig


def _binned(y_true: np.ndarray, probs: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(confidence, correct as 0/1, bin index) per image, after checking the inputs agree."""
    y_true, probs = labelled_probabilities(y_true, probs, "calibration")
    if int(bins) < 1:
        raise ValueError(f"bins={bins}: need at least one bin")
    bins = int(bins)
    confidence = probs.max(axis=1)
    correct = (probs.argmax(axis=1) == y_true).astype(np.float64)
    # (lo, hi] bins against the same edges the table reports (no confidence * bins rounding at the boundaries):
    # a confidence of exactly 1/15 belongs to the first bin, 1.0 to the last.
    inner = np.linspace(0.0, 1.0, bins + 1)[1:-1]
    index = np.searchsorted(inner, confidence, side="left").astype(np.int64)
    return confidence, correct, index
