"""The last step of a run (and of an ensemble): choose the evaluation-time gains on validation, build the shipped
model and score it on validation and test. Nothing here writes to MLflow: ship_record.py records what it made."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from ..data import Prepared
from ..data.pipeline import eval_dataset
from ..evaluation import bootstrap
from ..views import VIEWS
from .batch_predict import predict
from .gains import Gains, View, check, choose_gains, per_view, probabilities, step_probabilities, views_needed, wrap
from .model import logits_of

PARTS = ("val", "test")


@dataclass
class Shipping:
    model: keras.Model  # the shipped model: fixed input size, gains inside
    gains: Gains
    views: dict[str, dict[View, np.ndarray]]  # split -> view -> logits (mean over members for an ensemble)
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)  # split -> the shipped model's output
    steps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # split -> gain step -> probabilities
    seconds: float = 0.0
    # split -> a lesion id per image (intervals resample whole lesions), None where unknown (by image)
    groups: dict[str, np.ndarray | None] = field(default_factory=dict)
    image_ids: dict[str, np.ndarray] = field(default_factory=dict)  # split -> image id per row (pairs runs' images)
    # split -> metric -> its 95% bootstrap interval (filled by log_scores)
    intervals: dict[str, dict[str, bootstrap.Interval]] = field(default_factory=dict)
    # split -> each row's operating-point threshold, where its rows were scored by other gains than the shipped
    # ones (a cross-validation's out-of-fold rows, each through gains chosen without its fold: score_held_out)
    row_thresholds: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.probabilities = {part: probabilities(self.gains, v) for part, v in self.views.items()}
        self.steps = {part: step_probabilities(self.gains, v) for part, v in self.views.items()}

    def score_held_out(self, part: str, probs: np.ndarray, thresholds: np.ndarray | None) -> None:
        """Score `part` by these probabilities (and operating-point thresholds, a row each) instead of the shipped
        gains': the figures, intervals and pairs logged for it then hold no choice made on its images. Each gain
        step's figures (`steps`) stay the shipped gains', which is what they describe."""
        self.probabilities[part] = probs
        if thresholds is not None:
            self.row_thresholds[part] = thresholds

    def threshold(self, part: str) -> float | np.ndarray | None:
        """The operating point's threshold on `part`: one for every row, or a row's own (None: no point)."""
        point = self.gains.operating_point
        if point is None:
            return None
        return self.row_thresholds.get(part, point.threshold)


def view_logits(classifier: keras.Model, batch: int):
    """uint8 images -> the classifier's logits, through one traced prediction function."""
    head = logits_of(classifier)
    return lambda images: predict(head, eval_dataset(images, batch))


def ship(cfg, data: Prepared, classifier: keras.Model, batch: int, objective: str) -> Shipping:
    started = time.perf_counter()
    logits = view_logits(classifier, batch)
    val_views = per_view(logits, data.x["val"], views_needed(cfg.inference))
    groups = lesion_groups(data)
    gains = choose_gains(
        cfg.inference,
        data.y["val"],
        val_views,
        priors(data.y["train"], len(data.class_names)),
        data.class_names,
        objective,
        groups["val"],
    )
    test_views = per_view(logits, data.x["test"], VIEWS[gains.views])
    model = wrap([classifier], int(cfg.model.height), int(cfg.model.width), gains)
    ids = {part: getattr(data.split, part)["image_id"].to_numpy() for part in PARTS}
    shipping = Shipping(model, gains, {"val": val_views, "test": test_views}, groups=groups, image_ids=ids)
    check(model, data.x["val"][:8], shipping.probabilities["val"][:8])
    shipping.seconds = time.perf_counter() - started
    return shipping


def lesion_groups(data: Prepared) -> dict[str, np.ndarray | None]:
    """Each evaluated split's lesion id per image, in the order of data.x / data.y (the split table's `group`)."""
    return {part: getattr(data.split, part)["group"].to_numpy() for part in PARTS}


def priors(y_train: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.bincount(y_train, minlength=num_classes).astype(float)
    return counts / counts.sum()


def member_views(views: Sequence[dict[View, np.ndarray]], names: Sequence[View]) -> dict[View, np.ndarray]:
    """Several members' per-view logits as one ensemble's: the mean over members, view by view."""
    return {v: np.mean([m[v] for m in views], axis=0) for v in names}
