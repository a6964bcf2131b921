"""The run's last step before tracking: choose the evaluation-time gains on validation, build the shipped model,
score it on validation and test, and record what each gain did (the figures a person compares runs by)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import keras
import mlflow
import numpy as np

from ..data import Prepared
from ..data.pipeline import eval_dataset
from ..evaluation import metrics as scoring
from ..evaluation.operating_point import sensitivity_specificity
from ..evaluation.reliability import expected_calibration_error, plot_reliability, reliability_table
from ..keras_layers import VIEWS
from ..tracking import run_format as rf
from ..tracking.artifacts import BackgroundArtifacts, log_json
from .batch_predict import predict
from .gains import Gains, check, choose_gains, per_view, probabilities, step_probabilities, views_needed, wrap
from .model import logits_of

REPORTED = ("balanced_accuracy", "macro_f1", "macro_auc", "accuracy")


@dataclass
class Shipping:
    model: keras.Model  # the shipped model: fixed input size, gains inside
    gains: Gains
    probabilities: dict[str, np.ndarray]  # "val" / "test" -> the shipped model's probabilities
    steps: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # split -> step -> probabilities
    seconds: float = 0.0


def ship(cfg, data: Prepared, classifier: keras.Model, batch: int, objective: str) -> Shipping:
    started = time.perf_counter()
    head = logits_of(classifier)

    def logits(images: np.ndarray) -> np.ndarray:
        return predict(head, eval_dataset(images, batch))

    val_views = per_view(logits, data.x["val"], views_needed(cfg.inference))
    counts = np.bincount(data.y["train"], minlength=len(data.class_names)).astype(float)
    gains = choose_gains(cfg.inference, data.y["val"], val_views, counts / counts.sum(), data.class_names, objective)
    test_views = per_view(logits, data.x["test"], VIEWS[gains.views])
    model = wrap([classifier], int(cfg.model.height), int(cfg.model.width), gains)
    views = {"val": val_views, "test": test_views}
    probs = {part: probabilities(gains, v) for part, v in views.items()}
    check(model, data.x["val"][:8], probs["val"][:8])
    steps = {part: step_probabilities(gains, v) for part, v in views.items()}
    return Shipping(model, gains, probs, steps, time.perf_counter() - started)


def log_gains(data: Prepared, shipping: Shipping, figures: BackgroundArtifacts) -> None:
    """Each gain on its own (plain -> + views -> + calibration and prior), the calibration and the operating point."""
    gains = shipping.gains
    names = data.class_names
    point = gains.operating_point
    k = names.index(point.class_name) if point is not None else None
    report: dict = {"chosen": gains.to_meta(), "view_sets_val": gains.view_scores, "steps": {}}
    out: dict[str, float] = {
        rf.metric(rf.CALIBRATION, "temperature"): gains.temperature,
        rf.metric(rf.CALIBRATION, "prior_tau"): gains.prior_tau,
    }
    for name, value in gains.view_scores.items():
        out[rf.metric(rf.GAINS, f"{name}_views_val_objective")] = value
    for part, steps in shipping.steps.items():
        y = data.y[part]
        for step, probs in steps.items():
            found = {m: scoring.scores(y, probs)[m] for m in REPORTED}
            if k is not None and (y == k).any():
                found[f"recall_{names[k]}"] = float(np.mean(probs[y == k].argmax(1) == k))
            report["steps"].setdefault(step, {})[part] = found
            out.update({rf.metric(rf.GAINS, f"{step}_{part}_{m}"): v for m, v in found.items()})
        out[rf.metric(rf.CALIBRATION, f"ece_{part}_before")] = expected_calibration_error(y, steps["views"])
        out[rf.metric(rf.CALIBRATION, f"ece_{part}_after")] = expected_calibration_error(y, steps["adjusted"])
        if point is not None and k is not None and (y == k).any():
            sens, spec = sensitivity_specificity(y, shipping.probabilities[part], k, point.threshold)
            out[rf.metric(rf.OPERATING_POINT, f"{part}_sensitivity")] = sens
            out[rf.metric(rf.OPERATING_POINT, f"{part}_specificity")] = spec
    if point is not None:
        out[rf.metric(rf.OPERATING_POINT, "threshold")] = point.threshold
    mlflow.log_metrics({key: float(v) for key, v in out.items() if math.isfinite(v)})
    y_val = data.y["val"]
    val_steps = shipping.steps["val"]
    report["reliability_val"] = {step: reliability_table(y_val, val_steps[step]) for step in ("views", "adjusted")}
    log_json(report, rf.GAINS_REPORT)
    figures.figure(
        lambda: plot_reliability(
            {"before calibration": (y_val, val_steps["views"]), "after": (y_val, val_steps["adjusted"])}, "validation"
        ),
        rf.evaluation_artifact("val", rf.RELIABILITY_PNG),
    )
