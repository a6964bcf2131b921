"""Classification metrics, per-class report, confusion matrix and plots. Pure NumPy/sklearn/matplotlib."""
from __future__ import annotations

import numpy as np
from sklearn.metrics import classification_report, confusion_matrix, f1_score, roc_auc_score

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


def report(y_true: np.ndarray, probs: np.ndarray, class_names: list[str]) -> dict:
    """Per-class precision, recall, F1 and support (sklearn's classification_report as a dict)."""
    labels = list(range(len(class_names)))
    return classification_report(
        y_true, probs.argmax(axis=1), labels=labels, target_names=class_names, output_dict=True, zero_division=0
    )


def confusion(y_true: np.ndarray, probs: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts (rows: true class, columns: predicted) and the row-normalised matrix (recall on the diagonal)."""
    counts = confusion_matrix(y_true, probs.argmax(axis=1), labels=list(range(k)))
    totals = counts.sum(axis=1, keepdims=True)
    normalised = np.divide(counts, totals, out=np.zeros_like(counts, dtype=float), where=totals > 0)
    return counts, normalised


def plot_confusion(counts: np.ndarray, normalised: np.ndarray, class_names: list[str], title: str):
    """One figure, two panels: counts, and rows normalised (recall on the diagonal).

    Built with matplotlib's object API, not pyplot: no global state, so figures can be drawn off the main thread
    (tracking.BackgroundArtifacts).
    """
    from matplotlib.figure import Figure

    # Fixed margins: a layout engine draws the figure twice and doubled its cost (~0.4 s -> 0.8 s here).
    fig = Figure(figsize=(13, 5.5))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.16, top=0.93, wspace=0.22)
    for ax, matrix, label, is_normalised in zip(fig.subplots(1, 2), (counts, normalised),
                                                ("counts", "recall per row"), (False, True)):
        im = ax.imshow(matrix, cmap="Blues", vmin=0, vmax=1 if is_normalised else None)
        ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
        ax.set_yticks(range(len(class_names)), class_names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{title}: {label}")
        limit = (1.0 if is_normalised else matrix.max()) / 2 if matrix.size else 0
        for i in range(matrix.shape[0]):
            for j in range(matrix.shape[1]):
                text = f"{matrix[i, j]:.2f}" if is_normalised else f"{int(matrix[i, j])}"
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="white" if matrix[i, j] > limit else "black")
        fig.colorbar(im, ax=ax)
    return fig


def plot_curves(history: dict[str, list[float]], phase_boundary: int | None):
    """Training curves: loss and the validation metrics per epoch, with the start of fine-tuning marked."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4))
    fig.subplots_adjust(left=0.06, right=0.98, bottom=0.13, top=0.92, wspace=0.18)
    left, right = fig.subplots(1, 2)
    epochs = range(1, len(history.get("loss", [])) + 1)
    for key in ("loss", "val_loss"):
        if history.get(key):
            left.plot(epochs, history[key], label=key)
    for key in ("accuracy", "val_accuracy", "val_balanced_accuracy", "val_macro_f1", "val_macro_auc"):
        if history.get(key):
            right.plot(epochs, history[key], label=key)
    for ax, title in ((left, "loss"), (right, "metrics")):
        if phase_boundary:
            ax.axvline(phase_boundary + 0.5, color="grey", ls="--", lw=1)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.legend(fontsize=8)
    return fig
