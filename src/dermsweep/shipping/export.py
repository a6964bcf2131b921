"""Export a trained model for phones and browsers, and measure what each format costs and keeps.

Formats (written to one folder, then logged to the source run under `export/`; converters.py has the table):
  model.keras          the Keras model itself: the reference the others are compared with
  savedmodel/          TensorFlow SavedModel (keras `model.export`, endpoint `serve`)
  model_f32.tflite     TFLite float32
  model_f16.tflite     TFLite float16 weights (float32 compute/I/O)
  model_int8_full.tflite  TFLite full-integer post-training quantisation, calibrated on ~150 training images:
                       every op int8 (integer-only accelerators).
  model_int8.tflite    TFLite int8 that keeps quality (int8.py): the same calibration, with the layers that lose
                       most (TFLite's quantization debugger) kept float until validation balanced accuracy is
                       within 1 point of float's; the report lists the layers kept float and every candidate.
                       Default I/O of both int8 files: float32 in (raw 0-255 pixels, like every other format) and
                       float32 probabilities out, so apps switch formats without code changes. `--int8-io int8`
                       gives int8 input/output tensors.
  model.onnx           ONNX (keras `model.export(format="onnx")`) for onnxruntime-web
  model_info.json      class names, input size, resize (the same metadata as the run's model)
  report.json / .md    the table below

For each format: size, batch-1 CPU latency (median of N timed calls after warm-up, one thread) and, when the run's
validation split can be rebuilt (or --data-dir is given), validation balanced accuracy and agreement with Keras.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..evaluation import metrics
from ..timing import median_latency_ms
from ..tracking import run_format as rf
from ..tracking.model_ref import ModelRef, load
from ..tracking.store import first_line
from .converters import CONVERTERS, FORMATS, Context, ExportError, Runner
from .int8 import Int8Options, Validation
from .labelled_data import read_dataset, read_images, rebuild_run_data

__all__ = ["FORMATS", "ExportError", "ExportReport", "export"]


@dataclass
class EvalData:
    x_val: np.ndarray | None  # uint8 (n, H, W, 3)
    y_val: np.ndarray | None
    x_calib: np.ndarray | None  # uint8 (m, H, W, 3) for int8 calibration
    source: str  # where these images came from (said in the report)
    notes: list[str] = field(default_factory=list)


@dataclass
class FormatRow:
    format: str
    path: str
    size_bytes: int
    latency_ms: float | None = None
    balanced_accuracy: float | None = None
    agreement: float | None = None  # share of validation images with the same top-1 class as Keras
    max_abs_diff: float | None = None  # largest probability difference from Keras
    error: str | None = None
    details: dict | None = None  # what the converter chose (int8: layers kept float, each candidate's scores)


@dataclass
class ExportReport:
    model: str
    run_id: str | None
    out_dir: str
    data_source: str
    int8_io: str
    rows: list[FormatRow]
    notes: list[str]
    logged_to: str | None = None

    def row(self, fmt: str) -> FormatRow | None:
        return next((r for r in self.rows if r.format == fmt), None)

    def to_json(self) -> dict:
        return {
            "model": self.model,
            "run_id": self.run_id,
            "out_dir": self.out_dir,
            "data_source": self.data_source,
            "int8_io": self.int8_io,
            "notes": self.notes,
            "logged_to": self.logged_to,
            "formats": [r.__dict__ for r in self.rows],
        }

    def markdown(self) -> str:
        lines = [
            f"# Export of {self.model}",
            "",
            f"Validation data: {self.data_source}",
            "",
            "| format | size | latency (ms, batch 1) | val balanced acc | agreement with Keras |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in self.rows:
            lines.append(
                f"| {r.format} | {human_size(r.size_bytes)} | {fmt(r.latency_ms, '.2f')} | "
                f"{fmt(r.balanced_accuracy, '.4f')} | {fmt(r.agreement, '.1%')} |"
            )
        lines += [""] + [f"- {n}" for n in self.notes]
        for r in self.rows:
            if r.details and "steps" in r.details:
                lines += ["", *int8_lines(r.format, r.details)]
        return "\n".join(lines) + "\n"


def int8_lines(name: str, details: dict) -> list[str]:
    """The int8 search in words: what stayed float and what each candidate scored."""
    kept = details.get("float_layers") or []
    met = details.get("met")
    lines = [
        f"## {name}: layers kept float",
        "",
        f"Search: {details.get('search')}. Target {'met' if met else 'not met' if met is not None else 'not checked'}.",
        f"Kept float: {len(kept)} layer(s)" + (": " + ", ".join(k["layer"] for k in kept) if kept else ""),
        f"Tail kept float: {', '.join(details.get('float_tail') or []) or 'none'}",
        f"Float ops in the file: {details.get('float_ops')}",
    ]
    if details.get("steps"):
        lines += [
            "",
            "| layers float | size | images scored | agreement | val balanced acc | Δ vs float | met |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for s in details["steps"]:
            lines.append(
                f"| {s['float_layers']} | {human_size(s['size_bytes'])} | {s['images']} | {s['agreement']:.1%} | "
                f"{fmt(s['balanced_accuracy'], '.4f')} | {fmt(s['delta'], '+.4f')} | {'yes' if s['met'] else 'no'} |"
            )
    return lines


def fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def human_size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def size_on_disk(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


# ---------------------------------------------------------------- data for calibration and evaluation
def eval_data(
    ref: ModelRef, data_dir: str | None = None, calibration_dir: str | None = None, calibration_count: int = 150
) -> EvalData:
    h, w = ref.input_size
    if data_dir:
        found = read_dataset(data_dir, ref.class_names, h, w)
        data = EvalData(found.x, found.y, found.x, f"--data-dir {found.source}; also used for int8 calibration")
    elif ref.run_id:
        try:
            prepared, notes = rebuild_run_data(ref.run_id, h, w)
            if list(prepared.class_names) != ref.class_names:
                raise DataError(f"rebuilt data has classes {prepared.class_names}, the model {ref.class_names}")
            data = EvalData(
                prepared.x["val"],
                prepared.y["val"],
                prepared.x["train"],
                f"validation split {prepared.split.split_id} of run {ref.run_id}, rebuilt from its config "
                f"({len(prepared.y['val'])} images; int8 calibrated on its training split)",
                notes,
            )
        except DataError as exc:
            data = EvalData(None, None, None, f"none: the run's data is not available here ({first_line(exc)})")
    else:
        data = EvalData(
            None,
            None,
            None,
            "none: no run to rebuild validation data from and no --data-dir, so "
            "accuracy and agreement are not measured",
        )
    if calibration_dir:
        data.x_calib = read_images(calibration_dir, h, w)
        data.notes.append(f"int8 calibrated on {len(data.x_calib)} images from {calibration_dir}")
    if data.x_calib is not None and len(data.x_calib) > calibration_count:
        rng = np.random.default_rng(0)
        data.x_calib = data.x_calib[np.sort(rng.choice(len(data.x_calib), calibration_count, replace=False))]
    return data


def predict_all(run: Runner, x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([run(x[i : i + batch].astype(np.float32)) for i in range(0, len(x), batch)])


# ---------------------------------------------------------------- export
def export(
    model_uri: str,
    out_dir: str | Path,
    client=None,
    data_dir: str | None = None,
    calibration_dir: str | None = None,
    calibration_count: int = 150,
    runs: int = 50,
    warmup: int = 5,
    int8_io: str = "float",
    formats=FORMATS,
    log_to_run: bool = True,
    max_eval: int | None = None,
    progress=None,
    int8: Int8Options = Int8Options(),
) -> ExportReport:
    say = progress or (lambda msg: None)
    model, ref = load(model_uri, client)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / rf.MODEL_INFO).write_text(json.dumps(dict(ref.meta, int8_io=int8_io), indent=2))
    say(f"model {ref.describe()}")
    data = eval_data(ref, data_dir, calibration_dir, calibration_count)
    notes = list(data.notes)
    if max_eval and data.x_val is not None and data.y_val is not None and len(data.x_val) > max_eval:
        data.x_val, data.y_val = data.x_val[:max_eval], data.y_val[:max_eval]
    h, w = ref.input_size
    x1 = (data.x_val[:1] if data.x_val is not None else np.full((1, h, w, 3), 128, np.uint8)).astype(np.float32)
    model(x1)  # builds the model's call graph (needed by the ONNX route for a freshly loaded model)

    keras_file = out / "model.keras"
    model.save(keras_file)
    # predict_on_batch runs the compiled graph: a fair batch-1 latency (an eager call pays per-layer Python cost)
    runners: dict[str, tuple[Runner, Path]] = {"keras": (lambda x: np.asarray(model.predict_on_batch(x)), keras_file)}
    keras_probs = predict_all(runners["keras"][0], data.x_val) if data.x_val is not None else None
    validation = (
        Validation(data.x_val, data.y_val, keras_probs)
        if data.x_val is not None and data.y_val is not None and keras_probs is not None
        else None
    )
    ctx = Context(data.x_calib, int8_io, validation, int8, say)
    details: dict[str, dict] = {}
    for name in formats:
        if name == "keras":
            continue
        say(f"exporting {name}")
        try:
            converter = CONVERTERS.get(name)
            if converter is None:
                raise ExportError(f"unknown format {name!r} (choose from {', '.join(FORMATS)})")
            path = out / converter.file
            found = converter.write(model, path, ctx)
            if found:
                details[name] = found
            runners[name] = (converter.runner(path), path)
        except ExportError as exc:
            notes.append(f"{name}: skipped: {exc}")
        except Exception as exc:
            notes.append(f"{name}: failed: {first_line(exc)}")

    rows = []
    for name, (run, path) in runners.items():
        say(f"measuring {name}")
        row = FormatRow(name, str(path.relative_to(out)), size_on_disk(path), details=details.get(name))
        try:
            row.latency_ms = median_latency_ms(run, x1, runs, warmup)
            if data.x_val is not None and data.y_val is not None and keras_probs is not None:
                probs = keras_probs if name == "keras" else predict_all(run, data.x_val)
                row.balanced_accuracy = metrics.score("balanced_accuracy", data.y_val, probs)
                row.agreement = float(np.mean(probs.argmax(1) == keras_probs.argmax(1)))
                row.max_abs_diff = float(np.max(np.abs(probs - keras_probs)))
        except Exception as exc:
            row.error = first_line(exc)
        rows.append(row)
    report = ExportReport(model_uri, ref.run_id, str(out), data.source, int8_io, rows, notes)
    if log_to_run and ref.run_id and client is not None:
        say(f"logging to run {ref.run_id} under {rf.EXPORT_DIR}/")
        report.logged_to = f"runs:/{ref.run_id}/{rf.EXPORT_DIR}"
        _write_report(out, report)
        try:
            client.log_artifacts(ref.run_id, str(out), rf.EXPORT_DIR)
        except Exception as exc:
            report.logged_to = None
            report.notes.append(f"could not log the export to run {ref.run_id}: {first_line(exc)}")
    _write_report(out, report)
    return report


def _write_report(out: Path, report: ExportReport) -> None:
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2))
    (out / "report.md").write_text(report.markdown())
