"""Probabilities as an answer a person reads: the top diagnosis, its full name, every class's probability and the
top-k list. One rule for predict, the web page and the REST endpoint.

NumPy only: this file travels with the registered serving model (MLflow code_paths), where dermsweep may not be
installed. Full names come from the model's metadata (`full_names`), so nothing here knows HAM10000.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


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


def answer(probs: np.ndarray, class_names: Sequence[str], full_names: Mapping[str, str], k: int | None = None) -> dict:
    """{label, name, probability, probabilities: {class: p}, top: ranked(...)} for one image."""
    top = ranked(probs, class_names, full_names, k)
    return {**top[0], "probabilities": {c: float(p) for c, p in zip(class_names, probs, strict=True)}, "top": top}
