"""Probabilities as an answer a person reads: the top diagnosis, its full name, every class's probability, the
top-k list, and, when the model carries an operating point, the decision it implies. One rule for predict, the web
page, the REST endpoint and `dermsweep evaluate`.

NumPy only: this file travels with the registered serving model (MLflow code_paths), where dermsweep may not be
installed. Full names and the operating point come from the model's metadata (`full_names`, `operating_point`), so
nothing here knows HAM10000.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np


def decide(probs: np.ndarray, class_index: int, threshold: float) -> np.ndarray:
    """Predicted class indices (n,) for probabilities (n, k) at an operating point: `class_index` wherever its
    probability reaches `threshold`, elsewhere the most probable of the other classes. Not plain argmax below the
    threshold: a class that is the argmax but under its threshold is not predicted, so the decision's sensitivity is
    exactly the one the threshold was chosen for."""
    p = np.asarray(probs, dtype=np.float64)
    others = p.copy()
    others[:, class_index] = -np.inf
    return np.where(p[:, class_index] >= threshold, class_index, others.argmax(axis=1)).astype(np.int64)


def ranked(
    probs: np.ndarray, class_names: Sequence[str], full_names: Mapping[str, str], k: int | None = None
) -> list[dict]:
    """[{label, name, probability}] for the k most probable classes (all when k is None), best first."""
    order = np.argsort(-np.asarray(probs))[: (k or len(class_names))]
    return [
        {
            "label": class_names[j],
            "name": full_names.get(class_names[j], class_names[j]),
            "probability": float(probs[j]),
        }
        for j in order
    ]


def answer(
    probs: np.ndarray,
    class_names: Sequence[str],
    full_names: Mapping[str, str],
    k: int | None = None,
    operating_point: Mapping[str, Any] | None = None,
) -> dict:
    """{label, name, probability, probabilities: {class: p}, top: ranked(...), operating_point: ...} for one image.

    With an operating point (the model metadata's `operating_point`: class_name, threshold, val_sensitivity,
    val_specificity), `operating_point` says whether that class is flagged and what the decision at the point is.
    """
    top = ranked(probs, class_names, full_names, k)
    out = {**top[0], "probabilities": {c: float(p) for c, p in zip(class_names, probs, strict=True)}, "top": top}
    point = flag(probs, class_names, full_names, operating_point)
    if point is not None:
        out["operating_point"] = point
    return out


def flag(
    probs: np.ndarray, class_names: Sequence[str], full_names: Mapping[str, str], point: Mapping[str, Any] | None
) -> dict | None:
    """The operating point's verdict for one image, or None without a usable point for these classes."""
    if not point or point.get("class_name") not in class_names:
        return None
    k = list(class_names).index(point["class_name"])
    threshold = float(point["threshold"])
    decided = class_names[int(decide(np.asarray(probs)[None], k, threshold)[0])]
    return {
        "class_name": point["class_name"],
        "name": full_names.get(point["class_name"], point["class_name"]),
        "probability": float(probs[k]),
        "threshold": threshold,
        "flagged": bool(probs[k] >= threshold),
        "decision": decided,
        "val_sensitivity": point.get("val_sensitivity"),
        "val_specificity": point.get("val_specificity"),
    }
