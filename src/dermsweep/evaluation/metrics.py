"""Classification metrics, per-class report and confusion matrix. Pure NumPy/scikit-learn."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score

# Every metric computed each epoch on validation and once at the end on validation and test.
METRICS = ("loss", "accuracy", "top2_accuracy", "balanced_accuracy", "macro_f1", "macro_auc")
EPS = 1e-7


def scores(y_true: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """All METRICS for integer labels and predicted probabilities (n, k)."""
    y_true = np.asarray(y_true, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    k = probs.shape[1]
    pred = probs.argmax(axis=1)
    top2 = np.argsort(-probs, axis=1)[:, :2]
    present = np.unique(y_true)
    recalls = [np.mean(pred[y_true == c] == c) for c in present]
    return {
        "loss": float(-np.mean(np.log(np.clip(probs[np.arange(len(y_true)), y_true], EPS, 1.0)))),
        "accuracy": float(np.mean(pred == y_true)),
        "top2_accuracy": float(np.mean((top2 == y_true[:, None]).any(axis=1))),
        # Mean per-class recall over the classes present: the ISIC challenge metric.
        "balanced_accuracy": float(np.mean(recalls)),
        "macro_f1": float(f1_score(y_true, pred, labels=present, average="macro", zero_division=0)),
        "macro_auc": _macro_auc(y_true, probs, present, k),
    }


def _macro_auc(y_true, probs, present, k) -> float:
    """One-vs-rest AUC averaged over classes that have positives and negatives (tiny splits may lack some)."""
    aucs = []
    for c in present:
        positives = y_true == c
        if 0 < positives.sum() < len(y_true):
            aucs.append(roc_auc_score(positives, probs[:, c]))
    return float(np.mean(aucs)) if aucs else float("nan")


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
