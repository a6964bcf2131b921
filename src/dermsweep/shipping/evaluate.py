"""Score a shipped model on any labelled set (HAM10000 layout, ISIC 2018 Task 3 images + ground-truth CSV, or one
folder per class) and record it as an MLflow evaluation run.

The figures: balanced accuracy, accuracy, macro F1, macro AUC, per-class precision and recall, the confusion matrix
and the calibration error (top-label ECE), all at the argmax decision, as training scores its test split, so they
compare with the model's `test/...` figures. Melanoma sensitivity and specificity are read at the model's operating
point when its metadata carries one (`meta["operating_point"]`: the decision the model ships with), else at argmax,
and the report says which.

The run: role `evaluation` (ranking and promotion skip it) in its own experiment, tagged with the model reference,
version and training run and the data's path and layout; the images as an MLflow dataset (digest: the image ids
and labels); metrics under `eval/` and `eval_class/`; the report, confusion matrix, reliability diagram and the
list of skipped files as artifacts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..data.catalog import digest
from ..errors import ConfigError, DataError
from ..evaluation import bootstrap, metrics, plots
from ..evaluation.operating_point import META_KEY, OperatingPoint, sensitivity_specificity
from ..evaluation.reliability import DEFAULT_BINS, expected_calibration_error, plot_reliability, reliability_table
from ..tracking import run_format as rf
from ..tracking.model_ref import ModelRef, load
from ..tracking.store import connect, ensure_experiment
from .defaults import DEFAULT_MODEL_URI, EVALUATION_EXPERIMENT
from .labelled_data import Labelled, read_dataset, source_config

DEFAULT_EXPERIMENT = EVALUATION_EXPERIMENT
WATCHED_CLASS = "mel"  # the class whose sensitivity and specificity are reported when no operating point names one
HEADLINE = ("balanced_accuracy", "accuracy", "macro_f1", "macro_auc", "top2_accuracy", "loss")
PROGRESS_FROM = 500  # images: on smaller sets the prediction takes seconds and needs no progress lines


@dataclass
class Decision:
    """How the watched class's sensitivity and specificity were read: at the model's operating point, or argmax."""

    kind: str  # operating_point | argmax
    class_name: str | None  # None when the model has no such class
    point: OperatingPoint | None = None

    def describe(self) -> str:
        if self.point is not None:
            p = self.point
            return (
                f"operating point: {p.class_name} wherever P({p.class_name}) >= {p.threshold:.4g} (chosen for "
                f"sensitivity {p.target_sensitivity:.3g}; on its validation data {_num(p.val_sensitivity)} "
                f"sensitivity, {_num(p.val_specificity)} specificity)"
            )
        return "argmax decision (the model's metadata carries no operating point)"

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "class_name": self.class_name,
            "operating_point": self.point.to_meta() if self.point else None,
            "description": self.describe(),
        }


@dataclass
class EvaluationReport:
    model: str  # the reference as given
    model_description: str
    model_name: str | None
    model_version: str | None
    model_run_id: str | None
    model_id: str | None
    data: str
    layout: str
    dataset_name: str
    dataset_digest: str
    class_names: list[str]
    n_images: int
    metrics: dict[str, float | None]  # HEADLINE + ece + <class>_sensitivity / <class>_specificity
    per_class: dict[str, dict[str, float | None]]  # precision, recall, f1 (None where undefined), support
    confusion: list[list[int]]  # rows true class, columns predicted (argmax)
    reliability: dict  # evaluation.reliability.reliability_table + bins + ece
    decision: Decision
    skipped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    intervals: dict[str, list[float]] = field(default_factory=dict)  # metric -> [lo, hi]: 95% bootstrap, by image
    run_id: str | None = None
    experiment: str | None = None

    def to_json(self) -> dict:
        out: dict[str, Any] = {k: v for k, v in self.__dict__.items() if k != "decision"}
        out["decision"] = self.decision.to_json()
        out["n_skipped"] = len(self.skipped)
        return out


def evaluate(
    data: str | Path,
    model_uri: str = DEFAULT_MODEL_URI,
    client=None,
    *,
    batch_size: int = 32,
    max_images: int | None = None,
    log: bool = True,
    experiment: str = DEFAULT_EXPERIMENT,
    bins: int = DEFAULT_BINS,
    progress=None,
) -> EvaluationReport:
    """Score `model_uri` on the labelled set at `data`; with `log`, record an evaluation run in `experiment`.

    Raises DataError (missing folder, unknown layout, classes the model does not know, no readable image),
    ModelNotFound, TrackingError or ConfigError (bad batch size or image limit), each a one-line DermsweepError.
    """
    say = progress or (lambda message: None)
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size}: must be at least 1")
    if max_images is not None and max_images < 1:
        raise ConfigError(f"max images {max_images}: must be at least 1")
    source_config(_folder(data))  # a missing folder or an unknown layout is said before the model loads
    if log and client is None:
        client = connect()  # before the slow part: an unreachable store fails first
    model, ref = load(model_uri, client)
    say(f"model {ref.describe()}")
    h, w = ref.input_size
    say(f"reading the images at {h}x{w}")
    found = read_dataset(data, ref.class_names, h, w, max_images=max_images)
    say(f"data {found.source}" + (f"; {len(found.skipped)} skipped" if found.skipped else ""))
    probs = predict_batches(model, found.x, batch_size, say)
    report = score(found, probs, ref, str(data), bins)
    if log:
        say(f"logging the evaluation run to experiment {experiment!r}")
        log_run(report, found, probs, client, experiment)
    return report


def score(found: Labelled, probs: np.ndarray, ref: ModelRef, data: str, bins: int = DEFAULT_BINS) -> EvaluationReport:
    """Every figure of the report from labels and predicted probabilities; no MLflow."""
    y, names = found.y, ref.class_names
    figures: dict[str, float | None] = {k: _finite(v) for k, v in metrics.scores(y, probs).items()}
    figures["ece"] = expected_calibration_error(y, probs, bins)
    decision, notes = _decision(ref, names)
    if decision.class_name is not None:
        sensitivity, specificity = _rates(y, probs, names.index(decision.class_name), decision)
        figures[f"{decision.class_name}_sensitivity"] = sensitivity
        figures[f"{decision.class_name}_specificity"] = specificity
        if sensitivity is None:
            notes.append(f"no {decision.class_name} images in this set: its sensitivity is undefined")
    intervals = _intervals(y, probs, names, decision)
    counts, _ = metrics.confusion(y, probs, len(names))
    table = reliability_table(y, probs, bins)
    dataset_name = Path(data).expanduser().resolve().name or found.layout
    return EvaluationReport(
        model=ref.uri,
        model_description=ref.describe(),
        model_name=ref.model_name,
        model_version=ref.version,
        model_run_id=ref.run_id,
        model_id=ref.model_id,
        data=str(Path(data).expanduser().resolve()),
        layout=found.layout,
        dataset_name=dataset_name,
        dataset_digest=dataset_digest(found.image_ids, [names[i] for i in y]),
        class_names=list(names),
        n_images=len(y),
        metrics=figures,
        per_class=metrics.per_class(counts, names),
        confusion=counts.tolist(),
        reliability={"bins": bins, "ece": figures["ece"], **table},
        decision=decision,
        skipped=list(found.skipped),
        notes=notes,
        intervals=intervals,
    )


def _intervals(y: np.ndarray, probs: np.ndarray, names: list[str], decision: Decision) -> dict[str, list[float]]:
    """95% bootstrap intervals of the headline figures (by image: these sets carry no lesion ids)."""
    operating = None
    if decision.class_name is not None:
        threshold = decision.point.threshold if decision.point is not None else None
        operating = bootstrap.Operating(names.index(decision.class_name), decision.class_name, threshold)
    found = bootstrap.intervals(y, probs, metrics=(*bootstrap.HEADLINE, "accuracy"), operating=operating)
    return {k: [v.lo, v.hi] for k, v in found.items() if math.isfinite(v.lo) and math.isfinite(v.hi)}


def predict_batches(model, x: np.ndarray, batch_size: int, say, min_images: int = PROGRESS_FROM) -> np.ndarray:
    """The model's probabilities for `x`, batch by batch; on a large set, how far it is, about every tenth."""
    parts, step, next_said = [], max(len(x) // 10, 1), 0
    for i in range(0, len(x), batch_size):
        parts.append(np.asarray(model.predict_on_batch(x[i : i + batch_size].astype(np.float32)), dtype=np.float64))
        done = min(i + batch_size, len(x))
        if len(x) >= min_images and (done >= next_said + step or done == len(x)):
            say(f"predicted {done:,}/{len(x):,} images ({done / len(x):.0%})")
            next_said = done
    return np.concatenate(parts)


def _folder(data: str | Path) -> Path:
    path = Path(data).expanduser()
    if not path.is_dir():
        raise DataError(
            f"{data}: no such folder (expected a HAM10000 folder, an ISIC 2018 Task 3 folder with its ground-truth "
            "CSV, or one sub-folder of images per class)"
        )
    return path


def dataset_digest(image_ids: list[str], labels: list[str]) -> str:
    """The evaluated set's identity: its (image id, label) pairs, whatever order they were read in."""
    return digest("evaluation", sorted(zip(image_ids, labels, strict=True)))


def _decision(ref: ModelRef, names: list[str]) -> tuple[Decision, list[str]]:
    notes = []
    point = OperatingPoint.from_meta(ref.meta)
    if point is None and META_KEY in ref.meta:
        notes.append("the model's operating point is malformed; read at the argmax decision instead")
    if point is not None and point.class_name not in names:
        notes.append(f"the model's operating point names class {point.class_name!r}, which it does not have; ignored")
        point = None
    if point is not None:
        return Decision("operating_point", point.class_name, point), notes
    if WATCHED_CLASS not in names:
        notes.append(f"the model has no {WATCHED_CLASS!r} class: no sensitivity or specificity reported")
        return Decision("argmax", None), notes
    return Decision("argmax", WATCHED_CLASS), notes


def _rates(y: np.ndarray, probs: np.ndarray, index: int, decision: Decision) -> tuple[float | None, float | None]:
    if decision.point is not None:
        sensitivity, specificity = sensitivity_specificity(y, probs, index, decision.point.threshold)
    else:
        predicted = probs.argmax(axis=1) == index
        positive = y == index
        sensitivity = float(predicted[positive].mean()) if positive.any() else math.nan
        specificity = float((~predicted[~positive]).mean()) if (~positive).any() else math.nan
    return _finite(sensitivity), _finite(specificity)


def _finite(value: float) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _num(value: float | None) -> str:
    return f"{value:.3f}" if value is not None and math.isfinite(value) else "n/a"


# ---------------------------------------------------------------- the MLflow evaluation run
def log_run(report: EvaluationReport, found: Labelled, probs: np.ndarray, client, experiment: str) -> str:
    """Record `report` as a finished evaluation run in `experiment`; sets and returns report.run_id."""
    import mlflow
    import pandas as pd

    from ..tracking.artifacts import log_dataset, log_json
    from ..tracking.recorded_run import recorded_run

    experiment_id = ensure_experiment(client, experiment)
    tags = {
        rf.EVALUATED_MODEL: report.model,
        rf.EVAL_DATA_PATH: report.data,
        rf.EVAL_DATA_LAYOUT: report.layout,
        rf.EVAL_DECISION: report.decision.kind,
        **{
            key: value
            for key, value in (
                (rf.EVALUATED_MODEL_NAME, report.model_name),
                (rf.EVALUATED_VERSION, report.model_version),
                (rf.EVALUATED_RUN_ID, report.model_run_id),
                (rf.EVALUATED_MODEL_ID, report.model_id),
            )
            if value
        },
    }
    run_name = f"eval {_short_name(report)} on {report.dataset_name}"
    with recorded_run(client, experiment_id, run_name, "evaluation", tags=tags) as run:  # reapable if killed
        run_id = run.run_id
        report.run_id, report.experiment = run_id, experiment
        names = report.class_names
        table = pd.DataFrame({"image_id": found.image_ids, "label": [names[i] for i in found.y]})
        dataset = log_dataset(table, report.dataset_name, report.dataset_digest, report.data, "evaluation")
        if report.model_id:
            from mlflow.entities import LoggedModelInput

            mlflow.log_input(model=LoggedModelInput(report.model_id))  # the run's model input: lineage in the UI
        mlflow.log_params({"eval.n_images": report.n_images, "eval.ece_bins": report.reliability["bins"]})
        # Linked to the dataset, so the metrics say which data they were measured on.
        mlflow.log_metrics(_metrics(report), dataset=dataset)
        _log_artifacts(report, found.y, probs, log_json)
        run.finish(_description(report))
    return run_id


def _metrics(report: EvaluationReport) -> dict[str, float]:
    out = {rf.metric(rf.EVAL, k): v for k, v in report.metrics.items() if v is not None}
    for k, (lo, hi) in report.intervals.items():  # eval/X_lo95, eval/X_hi95
        out.update(bootstrap.bounds_metrics(rf.metric(rf.EVAL, k), bootstrap.Interval(math.nan, lo, hi)))
    out[rf.metric(rf.EVAL, "n_images")] = float(report.n_images)
    out[rf.metric(rf.EVAL, "n_skipped")] = float(len(report.skipped))
    point = report.decision.point
    if point is not None:
        out[rf.metric(rf.EVAL, f"{point.class_name}_threshold")] = point.threshold
    for name, stats in report.per_class.items():
        for stat in ("precision", "recall", "f1"):
            value = stats[stat]
            if value is not None:
                out[rf.metric(rf.EVAL_CLASS, f"{stat}_{name}")] = value
    return out


def _log_artifacts(report: EvaluationReport, y: np.ndarray, probs: np.ndarray, log_json) -> None:
    import mlflow

    def path(name: str) -> str:
        return rf.evaluation_artifact(rf.EVAL, name)

    names = report.class_names
    counts, normalised = metrics.confusion(y, probs, len(names))
    log_json(report.per_class, path(rf.CLASSIFICATION_REPORT))
    log_json(
        {"class_names": names, "counts": counts.tolist(), "row_normalised": normalised.tolist()},
        path(rf.CONFUSION_JSON),
    )
    title = report.dataset_name
    mlflow.log_figure(plots.plot_confusion(counts, normalised, names, title), path(rf.CONFUSION_PNG))
    log_json(report.reliability, path(rf.RELIABILITY_JSON))
    mlflow.log_figure(
        plot_reliability({_short_name(report): (y, probs)}, f"reliability on {title}", report.reliability["bins"]),
        path(rf.RELIABILITY_PNG),
    )
    if report.skipped:
        mlflow.log_text("\n".join(report.skipped) + "\n", rf.DATA_PROBLEMS)
    log_json(report.to_json(), path(rf.EVALUATION_REPORT))


def _short_name(report: EvaluationReport) -> str:
    """skin-lesion-classifier v3, a run id's first 8 characters, or the file's name: for run names and legends."""
    if report.model_version:
        return f"{report.model_name} v{report.model_version}"
    if report.model_run_id and not report.model.endswith(".keras"):
        return f"run {report.model_run_id[:8]}"
    return Path(report.model).name


def _description(report: EvaluationReport) -> str:
    m, watched = report.metrics, report.decision.class_name
    text = (
        f"{report.model_description} on {report.data} ({report.layout} layout, {report.n_images} images, "
        f"{len(report.skipped)} skipped): balanced accuracy {_num(m['balanced_accuracy'])}, ECE {_num(m['ece'])}"
    )
    if watched:
        text += (
            f", {watched} sensitivity {_num(m.get(f'{watched}_sensitivity'))} and specificity "
            f"{_num(m.get(f'{watched}_specificity'))} at the {report.decision.describe()}"
        )
    return text + "."
