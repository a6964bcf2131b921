"""An operating point for one class (melanoma, usually): a threshold on P(class) chosen on validation data to reach
a target sensitivity, because missing a melanoma costs far more than a second look at a nevus.

The point travels in the model's metadata as `meta["operating_point"]` (`to_meta` / `from_meta`), so whoever
scores or serves the model makes the same decision: the class wherever P(class) >= threshold, else the most probable
of the other classes (`decide`). Sensitivity and specificity here are for that class against all the others.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .. import diagnoses
from ..errors import DermsweepError
from .inputs import labelled_probabilities

META_KEY = "operating_point"


class OperatingPointError(DermsweepError, ValueError):
    """An operating point cannot be chosen or used with these inputs (no positives, a bad target...).

    A DermsweepError so the CLI prints it as one line; a ValueError for callers that treat it as a bad argument."""


@dataclass(frozen=True)
class OperatingPoint:
    class_name: str
    threshold: float  # predict class_name wherever P(class_name) >= threshold
    target_sensitivity: float  # what was asked for
    val_sensitivity: float  # what the threshold reached on the validation labels it was chosen on
    val_specificity: float  # and the specificity it cost there (nan when validation had no negatives)

    def to_meta(self) -> dict:
        """The value to store as meta["operating_point"] (plain floats and a string: JSON and YAML safe)."""
        return {k: (v if isinstance(v, str) else float(v)) for k, v in asdict(self).items()}

    @classmethod
    def from_meta(cls, meta: dict | None) -> OperatingPoint | None:
        """The point stored in a model's metadata, or None when there is none or it is malformed (a model without
        a usable point is scored at its argmax decision, never refused)."""
        node: Any = (meta or {}).get(META_KEY) if isinstance(meta, dict) else None
        if not isinstance(node, dict):
            return None
        try:
            point = cls(
                class_name=node["class_name"],
                threshold=float(node["threshold"]),
                target_sensitivity=float(node["target_sensitivity"]),
                val_sensitivity=float(node["val_sensitivity"]),
                val_specificity=float(node["val_specificity"]),
            )
        except (KeyError, TypeError, ValueError):
            return None
        if not isinstance(point.class_name, str) or not point.class_name:
            return None
        if not (math.isfinite(point.threshold) and 0.0 <= point.threshold <= 1.0):
            return None
        return point


def choose(
    y_true: np.ndarray, probs: np.ndarray, class_index: int, class_name: str, target_sensitivity: float
) -> OperatingPoint:
    """The highest threshold on P(class) whose sensitivity on these (validation) labels reaches the target.

    The highest such threshold keeps specificity as high as the target allows. It is always one of the positives'
    own probabilities: the m-th highest, where m = ceil(target * positives). Positives tied at that probability are
    all caught, so the reached sensitivity may exceed the target; negatives tied at it count as false alarms.
    """
    target = _target(target_sensitivity)
    y, p = _check(y_true, probs, class_index)
    positives = np.sort(p[y == class_index, class_index])[::-1]
    if not len(positives):
        raise OperatingPointError(
            f"no images of class {class_name!r} among the {len(y)} labels: a sensitivity target needs positives"
        )
    # Rounded before ceil: 0.07 * 100 is 7.000000000000001 in floating point and must need 7 positives, not 8.
    needed = max(1, math.ceil(round(target * len(positives), 9)))
    threshold = float(positives[needed - 1])
    sensitivity, specificity = _rates(y == class_index, p[:, class_index], threshold)
    return OperatingPoint(class_name, threshold, target, sensitivity, specificity)


def sensitivity_specificity(
    y_true: np.ndarray, probs: np.ndarray, class_index: int, threshold: float | np.ndarray
) -> tuple[float, float]:
    """(sensitivity, specificity) of deciding the class wherever P(class) >= threshold (one, or a row's own), the
    class against the rest. Either is nan when the labels hold no positives or no negatives respectively."""
    y, p = _check(y_true, probs, class_index)
    return _rates(y == class_index, p[:, class_index], threshold)


def _rates(positive: np.ndarray, p_class: np.ndarray, threshold: float | np.ndarray) -> tuple[float, float]:
    flagged = p_class >= threshold
    sensitivity = float(flagged[positive].mean()) if positive.any() else float("nan")
    specificity = float((~flagged[~positive]).mean()) if (~positive).any() else float("nan")
    return sensitivity, specificity


def decide(probs: np.ndarray, class_index: int, threshold: float) -> np.ndarray:
    """Predicted class indices (n,) at the operating point (dermsweep.diagnoses.decide, the one rule every door uses);
    checks the shapes first."""
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2 or not 0 <= class_index < p.shape[1]:
        raise OperatingPointError(
            f"need probabilities (n, k) and a class index in [0, k); got {p.shape}, {class_index}"
        )
    return diagnoses.decide(p, class_index, threshold)


def _target(value: float) -> float:
    try:
        target = float(value)
    except (TypeError, ValueError):
        target = float("nan")
    if not 0.0 < target <= 1.0:  # also false for nan
        raise OperatingPointError(f"target_sensitivity={value!r}: must be in (0, 1]")
    return target


def _check(y_true: np.ndarray, probs: np.ndarray, class_index: int) -> tuple[np.ndarray, np.ndarray]:
    y, p = labelled_probabilities(y_true, probs, "an operating point", OperatingPointError)
    if not 0 <= int(class_index) < p.shape[1]:
        raise OperatingPointError(f"class index {class_index} is outside the model's {p.shape[1]} classes")
    return y.astype(np.int64), p
