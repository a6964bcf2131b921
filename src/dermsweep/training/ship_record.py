"""What a run records of its shipped model (training/ship.py builds it): the scores with their intervals, what
each evaluation-time gain did, and each view's logits (so an ensemble, a cross-validation or the promotion gate can
later use a run's predictions without predicting again; `read_view_logits` reads them back)."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import numpy as np

from ..evaluation import bootstrap, plots
from ..evaluation import metrics as scoring
from ..evaluation.operating_point import sensitivity_specificity
from ..evaluation.reliability import expected_calibration_error, plot_reliability, reliability_table
from ..tracking import run_format as rf
from ..tracking.artifacts import BackgroundArtifacts, log_json
from .gains import View
from .ship import Shipping

REPORTED = ("balanced_accuracy", "macro_f1", "macro_auc", "accuracy")  # each gain step's figures


def log_scores(
    y: dict[str, np.ndarray], class_names: list[str], shipping: Shipping, figures: BackgroundArtifacts
) -> dict[str, dict[str, float]]:
    """The shipped model on validation, then test (once, only reported, never used for a choice): the metrics,
    per-class test figures, reports and confusion matrices."""
    final = {}
    k = len(class_names)
    for part, section in (("val", rf.FINAL_VAL), ("test", rf.TEST)):
        probs = shipping.probabilities[part]
        final[part] = scoring.scores(y[part], probs)
        mlflow.log_metrics({rf.metric(section, m): v for m, v in final[part].items() if math.isfinite(v)})
        mlflow.log_metrics(log_intervals(y[part], class_names, shipping, part, section))
        counts, normalised = scoring.confusion(y[part], probs, k)
        report = scoring.per_class(counts, class_names)
        log_json(report, rf.evaluation_artifact(part, rf.CLASSIFICATION_REPORT))
        log_json(
            {"class_names": class_names, "counts": counts.tolist(), "row_normalised": normalised.tolist()},
            rf.evaluation_artifact(part, rf.CONFUSION_JSON),
        )
        figures.figure(
            lambda c=counts, n=normalised, p=part: plots.plot_confusion(c, n, class_names, p),
            rf.evaluation_artifact(part, rf.CONFUSION_PNG),
        )
        if part == "test":
            mlflow.log_metrics(
                {
                    rf.metric(rf.TEST_CLASS, f"{stat}_{name}"): value
                    for name in class_names
                    for stat in ("precision", "recall", "f1")
                    if (value := report[name][stat]) is not None  # undefined: not logged (MLflow has no None)
                }
            )
    return final


def log_intervals(
    y: np.ndarray, class_names: list[str], shipping: Shipping, part: str, section: str
) -> dict[str, float]:
    """The 95% bootstrap intervals of the headline metrics (`<section>/<metric>_lo95` / `_hi95`, by lesion where
    lesion ids are known) and of the operating point's sensitivity and specificity
    (`operating_point/<part>_sensitivity_lo95` ...); kept on `shipping.intervals[part]`."""
    point = shipping.gains.operating_point
    operating = None
    if point is not None and point.class_name in class_names:
        operating = bootstrap.Operating(class_names.index(point.class_name), point.class_name, shipping.threshold(part))
    found = bootstrap.intervals(y, shipping.probabilities[part], shipping.groups.get(part), operating=operating)
    shipping.intervals[part] = found
    out: dict[str, float] = {}
    for name, interval in found.items():
        if operating is not None and name.startswith(f"{operating.class_name}_"):
            rate = name.removeprefix(f"{operating.class_name}_")
            out.update(bootstrap.bounds_metrics(rf.metric(rf.OPERATING_POINT, f"{part}_{rate}"), interval))
        else:
            out.update(bootstrap.bounds_metrics(rf.metric(section, name), interval))
    return out


def log_gains(
    y: dict[str, np.ndarray], class_names: list[str], shipping: Shipping, figures: BackgroundArtifacts
) -> None:
    """Each gain on its own (plain -> + views -> + calibration and prior), the calibration and the operating point."""
    gains = shipping.gains
    point = gains.operating_point
    k = class_names.index(point.class_name) if point is not None else None
    report: dict = {
        "chosen": gains.to_meta(),
        "view_sets_val": gains.view_scores,
        "evidence_val": gains.evidence,
        "steps": {},
    }
    out: dict[str, float] = {
        rf.metric(rf.GAINS, "temperature"): gains.temperature,
        rf.metric(rf.GAINS, "prior_tau"): gains.prior_tau,
    }
    for found in gains.evidence:  # e.g. gains/views_flips_p_better: the paired bootstrap behind each choice
        key = found["key"]
        out[rf.metric(rf.GAINS, f"{key}_difference")] = found["difference"]
        out[rf.metric(rf.GAINS, f"{key}_p_better")] = found["p_better"]
    for name, value in gains.view_scores.items():
        out[rf.metric(rf.GAINS, f"{name}_views_val_objective")] = value
    for part, steps in shipping.steps.items():
        labels = y[part]
        for step, probs in steps.items():
            found = {m: scoring.score(m, labels, probs) for m in REPORTED}
            if k is not None and (labels == k).any():
                found[f"recall_{class_names[k]}"] = float(np.mean(probs[labels == k].argmax(1) == k))
            report["steps"].setdefault(step, {})[part] = found
            out.update({rf.metric(rf.GAINS, f"{step}_{part}_{m}"): v for m, v in found.items()})
        out[rf.metric(rf.GAINS, f"ece_{part}_before")] = expected_calibration_error(labels, steps["views"])
        out[rf.metric(rf.GAINS, f"ece_{part}_after")] = expected_calibration_error(labels, steps["adjusted"])
        # the temperature's own effect (the prior adjustment moves decisions and confidence with them)
        out[rf.metric(rf.GAINS, f"ece_{part}_temperature")] = expected_calibration_error(labels, steps["calibrated"])
        threshold = shipping.threshold(part)
        if threshold is not None and k is not None and (labels == k).any():
            sens, spec = sensitivity_specificity(labels, shipping.probabilities[part], k, threshold)
            out[rf.metric(rf.OPERATING_POINT, f"{part}_sensitivity")] = sens
            out[rf.metric(rf.OPERATING_POINT, f"{part}_specificity")] = spec
    if point is not None:
        out[rf.metric(rf.OPERATING_POINT, "threshold")] = point.threshold
    mlflow.log_metrics({key: float(v) for key, v in out.items() if math.isfinite(v)})
    for part, title in (("val", "validation"), ("test", "test")):  # the README promises both
        part_steps, labels = shipping.steps[part], y[part]
        report[f"reliability_{part}"] = {
            s: reliability_table(labels, part_steps[s]) for s in ("views", "calibrated", "adjusted")
        }
        figures.figure(
            lambda part_steps=part_steps, labels=labels, title=title: plot_reliability(
                {
                    "before calibration": (labels, part_steps["views"]),
                    "temperature": (labels, part_steps["calibrated"]),
                    "temperature + prior": (labels, part_steps["adjusted"]),
                },
                title,
            ),
            rf.evaluation_artifact(part, rf.RELIABILITY_PNG),
        )
    log_json(report, rf.GAINS_REPORT)


def log_view_logits(shipping: Shipping, y: dict[str, np.ndarray]) -> None:
    """Every view's logits on validation and test, the labels, and (where known) the shipped model's probabilities,
    the image ids and lesion ids, as one .npz artifact: ensembles are chosen from these without predicting again,
    and the promotion gate pairs two runs' predictions image by image."""
    arrays: dict[str, np.ndarray] = {f"y_{part}": y[part] for part in y}
    for part, views in shipping.views.items():
        for (quarter_turns, mirror), logits in views.items():
            arrays[f"{part}_{quarter_turns}_{int(mirror)}"] = logits.astype(np.float32)
    for part, probs in shipping.probabilities.items():
        arrays[f"{SHIPPED}_{part}"] = probs.astype(np.float32)
    for prefix, table in ((IMAGES, shipping.image_ids), (GROUPS, shipping.groups)):
        for part, values in table.items():
            if values is not None:
                arrays[f"{prefix}_{part}"] = np.asarray(values).astype(str)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(rf.VIEW_LOGITS).name
        np.savez_compressed(path, **arrays)  # type: ignore[arg-type]  # numpy stubs: allow_pickle
        mlflow.log_artifact(str(path), str(Path(rf.VIEW_LOGITS).parent))


SHIPPED, IMAGES, GROUPS = "shipped", "image", "group"  # view_logits.npz keys besides y_<part> and <part>_<view>


@dataclass
class LoggedViews:
    """What log_view_logits wrote: per-view logits and the labels of each split; runs logged since the promotion
    gate also the shipped model's probabilities, image ids and lesion ids."""

    views: dict[str, dict[View, np.ndarray]]  # "val" / "test" -> view -> logits
    labels: dict[str, np.ndarray]  # "val" / "test" -> class indices
    probabilities: dict[str, np.ndarray] = field(default_factory=dict)
    image_ids: dict[str, np.ndarray] = field(default_factory=dict)
    groups: dict[str, np.ndarray] = field(default_factory=dict)


def read_view_logits(path: str) -> LoggedViews:
    out = LoggedViews({"val": {}, "test": {}}, {})
    named = {"y": out.labels, SHIPPED: out.probabilities, IMAGES: out.image_ids, GROUPS: out.groups}
    with np.load(path, allow_pickle=False) as data:
        for key in data.files:
            prefix, _, rest = key.partition("_")
            if prefix in named:
                named[prefix][rest] = data[key]
            else:
                part, quarter_turns, mirror = key.split("_")
                out.views[part][(int(quarter_turns), bool(int(mirror)))] = data[key]
    return out
