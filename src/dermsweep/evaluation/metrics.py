"""Classification metrics, per-class report and confusion matrix. Pure NumPy/scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

# Every metric computed each epoch on validation and once at the end on validation and test.
METRICS = ("loss", "accuracy", "top2_accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
EPS = 1e-7


def scores(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """All METRICS for integer labels and predicted probabilities (n, k)."""
    return {name: score(name, y_true, probs) for name in METRICS}


def score(name: str, y_true: np.ndarray, probs: np.ndarray) -> float:
    """One of METRICS, computing only it: a choice among many candidates (a prior adjustment's grid, an ensemble's
    members) needs one figure each, and macro AUC, which it rarely is, costs more than all the others together."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if name not in _METRIC:
        raise ValueError(f"no metric {name!r} (one of {', '.join(METRICS)})")
    return _METRIC[name](y_true, probs)


def _loss(y_true, probs) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], EPS, 1.0))))


def _accuracy(y_true, probs) -> float:
    return float(np.mean(probs.argmax(axis=1) == y_true))


def _top2_accuracy(y_true, probs) -> float:
    top2 = np.argsort(-probs, axis=1)[:, :2]
    return float(np.mean((top2 == y_true[:, None]).any(axis=1)))


def _balanced_accuracy(y_true, probs) -> float:
    """Mean per-class recall over the classes present: the ISIC challenge metric."""
    pred = probs.argmax(axis=1)
    return float(np.mean([np.mean(pred[y_true == c] == c) for c in np.unique(y_true)]))


def _macro_f1(y_true, probs) -> float:
    pred = probs.argmax(axis=1)
    return float(f1_score(y_true, pred, labels=np.unique(y_true), average="macro", zero_division=0))


def _macro_auc(y_true, probs) -> float:
    """One-vs-rest AUC averaged over classes that have positives and negatives (tiny splits may lack some)."""
    aucs = []
    for c in np.unique(y_true):
        positives = y_true == c
        if 0 < positives.sum() < len(y_true):
            aucs.append(roc_auc_score(positives, probs[:, c]))
    return float(np.mean(aucs)) if aucs else float("nan")


_METRIC = {
    "loss": _loss,
    "accuracy": _accuracy,
    "top2_accuracy": _top2_accuracy,
    "balanced_accuracy": _balanced_accuracy,
    "macro_f1": _macro_f1,
    "macro_auc": _macro_auc,
}


def per_class(counts: np.ndarray, names: list[str]) -> dict[str, dict[str, float | None]]:
    """Precision, recall and F1 per class from confusion counts (rows true, columns predicted), and the support;
    None where undefined (sklearn's report says 0 there, which reads as a measured failure: a class absent from the
    set has no recall at all). Training's test_class/* figures and `dermsweep evaluate` both use this."""
    out: dict[str, dict[str, float | None]] = {}
    for i, name in enumerate(names):
        support, predicted, hits = int(counts[i].sum()), int(counts[:, i].sum()), int(counts[i, i])
        precision = hits / predicted if predicted else None
        recall = hits / support if support else None
        f1 = None
        if precision is not None and recall is not None:
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    return out


def confusion(y_true: np.ndarray, probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts (rows: true class, columns: predicted) and the row-normalised matrix (recall on the diagonal)."""
    counts = confusion_matrix(y_true, probs.argmax(axis=1), labels=list(range(k)))
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts, dtype=float), where=totals > 0)
    return counts, normalised
