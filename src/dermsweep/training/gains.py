"""Evaluation-time gains: the trained classifier inside test-time views, calibration and a prior adjustment,
each chosen for it on validation; `wrap` builds the model a run ships.

    pixels (h, w, 3) -> test-time views (dihedral group) -> classifier logits -> mean over views (and members)
                     -> softmax(logits / temperature + prior bias) -> probabilities

Every choice (which views, the temperature, the prior adjustment, the melanoma threshold) is made on the validation
split; the test split is scored once with the result and only reported. The gains are layers of the shipped Keras
model (dermsweep.keras_layers), so predict, the REST model, TFLite, ONNX and the browser give the same numbers.
The NumPy functions here compute the same thing from per-view logits (tests and `check` pin the two together), so a
run scores its choices without running the shipped graph once per candidate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import numpy as np

from ..evaluation import bootstrap, calibration, metrics
from ..evaluation.operating_point import OperatingPoint, choose
from ..keras_layers import CalibratedSoftmax, DihedralView
from ..views import VIEW_SETS, VIEWS
from .model import logits_of

View = tuple[int, bool]  # (quarter turns, mirrored)
Logits = Callable[[np.ndarray], np.ndarray]  # uint8 images (n, h, w, 3) -> logits (n, k)
# A costlier gain must beat the cheaper choice in this share of the paired bootstrap resamples of validation.
DEFAULT_GAIN_CONFIDENCE = 0.9


@dataclass
class Gains:
    """What was chosen on validation."""

    views: str = "none"
    temperature: float = 1.0
    prior_tau: float = 0.0
    bias: list[float] | None = None
    operating_point: OperatingPoint | None = None
    view_scores: dict[str, float] = field(default_factory=dict)  # validation objective of each view set tried
    # Why each costlier choice was or was not taken: the paired bootstrap against the cheaper one on validation.
    evidence: list[dict] = field(default_factory=list)

    def to_meta(self) -> dict:
        """What the model's metadata says about its inference (predict, the model card and the web page read it)."""
        meta: dict = {"inference": {"views": self.views, "temperature": self.temperature, "prior_tau": self.prior_tau}}
        if self.operating_point is not None:
            meta["operating_point"] = self.operating_point.to_meta()
        return meta


def view_pixels(images: np.ndarray, view: View) -> np.ndarray:
    """The NumPy twin of keras_layers.DihedralView."""
    quarter_turns, mirror = view
    x = images
    if quarter_turns == 2:
        x = x[:, ::-1, ::-1]
    elif quarter_turns in (1, 3):
        x = np.transpose(x, (0, 2, 1, 3))
        x = x[:, :, ::-1] if quarter_turns == 1 else x[:, ::-1]
    if mirror:
        x = x[:, :, ::-1]
    return np.ascontiguousarray(x)


def per_view(logits: Logits, images: np.ndarray, views: Sequence[View]) -> dict[View, np.ndarray]:
    return {view: logits(view_pixels(images, view)) for view in views}


def mean_logits(views: dict[View, np.ndarray], name: str) -> np.ndarray:
    return np.mean([views[v] for v in VIEWS[name]], axis=0)


def probabilities(gains: Gains, views: dict[View, np.ndarray]) -> np.ndarray:
    """The shipped model's output from per-view logits (the NumPy path of `wrap`)."""
    return calibration.adjust(mean_logits(views, gains.views), gains.temperature, _bias(gains))


def choose_gains(
    cfg,
    y_val: np.ndarray,
    val_views: dict[View, np.ndarray],
    train_priors: np.ndarray,
    class_names: list[str],
    objective: str,
    groups: np.ndarray | None = None,
) -> Gains:
    """Pick the view set, temperature, prior adjustment and operating point on validation (cfg = `inference`).

    A costlier choice (more views, a prior adjustment) is taken only when it beats the cheaper one beyond
    validation's noise: in at least `inference.gain_confidence` of the paired bootstrap resamples of the validation
    images (by lesion when `groups` gives lesion ids). Each comparison is kept in `Gains.evidence`."""
    metric = objective.removeprefix("val_")
    confidence = float(cfg.get("gain_confidence", DEFAULT_GAIN_CONFIDENCE))

    def score(y: np.ndarray, probs: np.ndarray) -> float:
        return metrics.score(metric, y, probs)

    def weigh(key: str, step: str, costlier: np.ndarray, cheaper: np.ndarray) -> bool:
        found = bootstrap.paired(y_val, costlier, cheaper, metric, groups)
        taken = bootstrap.clearly_better(found, confidence)
        gains.evidence.append({"key": key, "step": step, **found.to_json(), "confidence": confidence, "taken": taken})
        return taken

    gains = Gains()
    wanted = VIEW_SETS if cfg.views == "auto" else (cfg.views,)
    # Only sets whose every view was scored (an ensemble of runs that logged flips cannot try the quarter turns).
    candidates = [name for name in wanted if all(v in val_views for v in VIEWS[name])]
    if not candidates:
        raise ValueError(f"inference.views={cfg.views}: its views were not scored on validation")
    probs_of = {name: calibration.adjust(mean_logits(val_views, name)) for name in candidates}
    for name in candidates:
        gains.view_scores[name] = score(y_val, probs_of[name])
    # From the cheapest set (fewest classifier calls per image) up: a costlier set only when clearly better.
    by_cost = sorted(candidates, key=lambda n: len(VIEWS[n]))
    gains.views = by_cost[0]
    for name in by_cost[1:]:
        if weigh(f"views_{name}", f"views {name} over {gains.views}", probs_of[name], probs_of[gains.views]):
            gains.views = name
    logits = mean_logits(val_views, gains.views)
    if cfg.calibrate:
        gains.temperature = calibration.fit_temperature(y_val, logits)
    if cfg.prior_adjustment:
        tau = calibration.fit_prior_tau(y_val, logits, train_priors, gains.temperature, score)
        adjusted = calibration.adjust(logits, gains.temperature, calibration.prior_bias(train_priors, tau))
        # Adjusting trades accuracy and macro F1 for rare-class recall: bought only beyond the noise.
        if tau != 0.0 and weigh(
            "prior", f"prior tau {tau:g} over none", adjusted, calibration.adjust(logits, gains.temperature)
        ):
            gains.prior_tau = tau
            gains.bias = calibration.prior_bias(train_priors, tau).tolist()
    point = cfg.get("operating_point")
    if point is not None and point.class_name in class_names:
        k = class_names.index(point.class_name)
        final = calibration.adjust(logits, gains.temperature, _bias(gains))
        gains.operating_point = choose(y_val, final, k, point.class_name, float(point.sensitivity))
    return gains


def views_needed(cfg) -> tuple[View, ...]:
    """The views validation must be scored on to choose among cfg.views."""
    return VIEWS["dihedral"] if cfg.views == "auto" else VIEWS[cfg.views]


def _bias(gains: Gains) -> np.ndarray | None:
    return np.asarray(gains.bias) if gains.bias is not None else None


def wrap(members: Sequence[keras.Model], height: int, width: int, gains: Gains, name: str = "shipped") -> keras.Model:
    """The shipped model: raw 0-255 RGB pixels (height, width) in, probabilities out, gains inside.

    `members` are classifiers that accept any input size (training.model.build); several make an ensemble whose
    members' logits are averaged with the views'."""
    heads = [logits_of(member) for member in members]
    pixels = keras.Input((height, width, 3), name="image", dtype="float32")
    outputs = []
    for quarter_turns, mirror in VIEWS[gains.views]:
        view = DihedralView(quarter_turns, mirror, name=f"view_{quarter_turns}{'m' if mirror else ''}")(pixels)
        outputs += [head(view) for head in heads]
    logits = outputs[0] if len(outputs) == 1 else keras.layers.Average(dtype="float32", name="mean_logits")(outputs)
    probs = CalibratedSoftmax(gains.temperature, gains.bias, name="probabilities")(logits)
    return keras.Model(pixels, probs, name=name)


def check(shipped: keras.Model, images: np.ndarray, expected: np.ndarray, tolerance: float | None = None) -> None:
    """The shipped graph must reproduce the probabilities the run reports (computed here from per-view logits).

    Float32 agrees to 1e-4; under mixed precision the two paths round differently in 16 bits (seen: 1e-3)."""
    if tolerance is None:
        tolerance = 1e-4 if keras.config.dtype_policy().compute_dtype == "float32" else 1e-2
    got = keras.ops.convert_to_numpy(shipped(images.astype(np.float32), training=False))
    gap = float(np.max(np.abs(got - expected)))
    if gap > tolerance:
        raise RuntimeError(f"the shipped model differs from the scored probabilities by {gap:.2e} (> {tolerance})")


def step_probabilities(gains: Gains, views: dict[View, np.ndarray]) -> dict[str, np.ndarray]:
    """Each evaluation-time step on its own: the plain classifier, + test-time views, + temperature, + prior."""
    return {
        "plain": calibration.adjust(views[VIEWS["none"][0]]),
        "views": calibration.adjust(mean_logits(views, gains.views)),
        # temperature only: the same decisions as "views", so it shows what calibration alone does to confidence
        "calibrated": calibration.adjust(mean_logits(views, gains.views), gains.temperature),
        "adjusted": probabilities(gains, views),
    }
