"""Figures of a run: confusion matrices and training curves.

Built with matplotlib's object API, not pyplot: no global state, so figures can be drawn off the main thread
(tracking.artifacts.BackgroundArtifacts). Fixed margins: a layout engine draws each figure twice (~0.4 s -> 0.8 s).
"""

from __future__ import annotations

import numpy as np


def plot_confusion(counts: np.ndarray, normalised: np.ndarray, class_names: list[str], title: str):
    """One figure, two panels: counts, and rows normalised (recall on the diagonal)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 5.5))
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.16, top=0.93, wspace=0.22)
    for ax, matrix, label, is_normalised in zip(
        fig.subplots(1, 2), (counts, normalised), ("counts", "recall per row"), (False, True), strict=False
    ):
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
                ax.text(
                    j, i, text, ha="center", va="center", fontsize=8, color="white" if matrix[i, j] > limit else "black"
                )
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
