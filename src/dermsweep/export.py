"""Export a trained model for phones and browsers, and measure what each format costs and keeps.

Formats (written to one folder, then logged to the source run under `export/`):
  savedmodel/          TensorFlow SavedModel (keras `model.export`, endpoint `serve`)
  model_f32.tflite     TFLite float32
  model_f16.tflite     TFLite float16 weights (float32 compute/I/O)
  model_int8.tflite    TFLite full-integer post-training quantisation, calibrated on ~150 training images.
                       Default I/O: float32 in (raw 0-255 pixels, like every other format) and float32
                       probabilities out, int8 for every op in between (quantise/dequantise at the edges), so apps
                       switch formats without code changes. `--int8-io int8` gives int8 input/output tensors instead
                       (for integer-only accelerators; the runner in predict.py quantises for you).
  model.onnx           ONNX (keras `model.export(format="onnx")`) for onnxruntime-web
  model_info.json      class names, input size, resize (the same metadata as the run's model)
  report.json / .md    the table below

For each format: size, batch-1 CPU latency (median of N timed calls after warm-up, one thread) and, when the run's
validation split can be rebuilt (or --data-dir is given), validation balanced accuracy and agreement with Keras.
"""
from __future__ import annotations

import json
import shutil
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.images import BadImage, load_rgb
from .errors import DataError, DermsweepError
from .model_io import ModelRef, _first_line, load

FORMATS = ("keras", "savedmodel", "tflite_f32", "tflite_f16", "tflite_int8", "onnx")


class ExportError(DermsweepError):
    """A format could not be produced or checked."""


@dataclass
class EvalData:
    x_val: np.ndarray | None        # uint8 (n, H, W, 3)
    y_val: np.ndarray | None
    x_calib: np.ndarray | None      # uint8 (m, H, W, 3) for int8 calibration
    source: str                     # where these images came from (said in the report)
    notes: list[str] = field(default_factory=list)


@dataclass
class FormatRow:
    format: str
    path: str
    size_bytes: int
    latency_ms: float | None = None
    balanced_accuracy: float | None = None
    agreement: float | None = None       # share of validation images with the same top-1 class as Keras
    max_abs_diff: float | None = None     # largest probability difference from Keras
    error: str | None = None


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
        return {"model": self.model, "run_id": self.run_id, "out_dir": self.out_dir, "data_source": self.data_source,
                "int8_io": self.int8_io, "notes": self.notes, "logged_to": self.logged_to,
                "formats": [r.__dict__ for r in self.rows]}

    def markdown(self) -> str:
        lines = [f"# Export of {self.model}", "", f"Validation data: {self.data_source}", "",
                 "| format | size | latency (ms, batch 1) | val balanced acc | agreement with Keras |",
                 "| --- | --- | --- | --- | --- |"]
        for r in self.rows:
            lines.append(f"| {r.format} | {human_size(r.size_bytes)} | {fmt(r.latency_ms, '.2f')} | "
                         f"{fmt(r.balanced_accuracy, '.4f')} | {fmt(r.agreement, '.1%')} |")
        return "\n".join(lines + [""] + [f"- {n}" for n in self.notes]) + "\n"


def fmt(v, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def human_size(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.is_dir() else path.stat().st_size


# ---------------------------------------------------------------- data for calibration and evaluation
def eval_data(ref: ModelRef, client=None, data_dir: str | None = None, calibration_dir: str | None = None,
              calibration_count: int = 150) -> EvalData:
    h, w = ref.input_size
    names = ref.class_names
    data = None
    if data_dir:
        x, y = _read_class_folders(Path(data_dir), names, h, w)
        data = EvalData(x, y, x, f"--data-dir {data_dir} ({len(y)} images; also used for int8 calibration)")
    elif ref.run_id:
        data = _run_split(ref, client)
    if data is None:
        data = EvalData(None, None, None, "none: the run's validation split could not be rebuilt and no --data-dir "
                        "was given, so accuracy and agreement are not measured")
    if calibration_dir:
        data.x_calib = _read_any_images(Path(calibration_dir), h, w)
        data.notes.append(f"int8 calibrated on {len(data.x_calib)} images from {calibration_dir}")
    if data.x_calib is not None and len(data.x_calib) > calibration_count:
        rng = np.random.default_rng(0)
        data.x_calib = data.x_calib[np.sort(rng.choice(len(data.x_calib), calibration_count, replace=False))]
    return data


def _run_split(ref: ModelRef, client) -> EvalData | None:
    """The run's train/val images: dermsweep.data.for_run when available, else rebuilt from config.yaml."""
    from . import data as data_pkg

    h, w = ref.input_size
    for_run = getattr(data_pkg, "for_run", None)
    try:
        if for_run is not None:
            class_names, splits = for_run(ref.run_id)
            x, y = _split_arrays(splits, "val")
            xc, _ = _split_arrays(splits, "train")
            return EvalData(x, y, xc, f"validation split of run {ref.run_id} ({len(y)} images; "
                                      f"int8 calibrated on its training split)")
        cfg = _run_config(ref.run_id, client)
        if cfg is None or "data" not in cfg:
            return None
        seed = cfg.data.get("split", {}).get("seed")
        seed = int(cfg.get("seed", 42) if seed is None else seed)
        prepared = data_pkg.prepare(cfg.data, h, w, seed, None)
    except DataError as exc:
        return EvalData(None, None, None, f"none: the run's data is not available here ({_first_line(exc)})")
    except Exception as exc:  # noqa: BLE001 - a rebuild failure must not stop the export itself
        return EvalData(None, None, None, f"none: could not rebuild the run's data ({_first_line(exc)})")
    if list(prepared.class_names) != ref.class_names:
        return EvalData(None, None, None, "none: rebuilt data has classes "
                        f"{prepared.class_names}, the model {ref.class_names}")
    notes = []
    want = ref.meta.get("split_id")
    if want and want != prepared.split.split_id:
        notes.append(f"warning: rebuilt split {prepared.split.split_id} differs from the run's {want}; "
                     "accuracies are on the rebuilt validation split")
    return EvalData(prepared.x["val"], prepared.y["val"], prepared.x["train"],
                    f"validation split {prepared.split.split_id} of run {ref.run_id}, rebuilt from its config "
                    f"({len(prepared.y['val'])} images; int8 calibrated on its training split)", notes)


def _split_arrays(splits, name):
    if hasattr(splits, "x") and hasattr(splits, "y"):
        return splits.x[name], splits.y[name]
    part = splits[name]
    return (part[0], part[1]) if isinstance(part, tuple | list) else (part["x"], part["y"])


def _run_config(run_id: str, client):
    import mlflow
    from omegaconf import OmegaConf

    for name in ("config.yaml", ".hydra/config.yaml", "config/config.yaml"):
        try:
            path = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name)
            return OmegaConf.load(path)
        except Exception:  # noqa: BLE001 - try the next place
            continue
    return None


def _read_class_folders(root: Path, names: list[str], h: int, w: int):
    if not root.is_dir():
        raise DataError(f"--data-dir {root}: no such folder (expected one sub-folder per class: {', '.join(names)})")
    xs, ys, unknown = [], [], []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        if d.name not in names:
            unknown.append(d.name)
            continue
        for f in sorted(d.iterdir()):
            try:
                xs.append(load_rgb(f, h, w))
                ys.append(names.index(d.name))
            except BadImage:
                continue
    if unknown:
        raise DataError(f"--data-dir {root}: folders {unknown} are not classes of this model ({', '.join(names)})")
    if not xs:
        raise DataError(f"--data-dir {root}: no readable images in class folders {', '.join(names)}")
    return np.stack(xs), np.array(ys, dtype=np.int64)


def _read_any_images(root: Path, h: int, w: int) -> np.ndarray:
    files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else []
    xs = []
    for f in files:
        try:
            xs.append(load_rgb(f, h, w))
        except BadImage:
            continue
    if not xs:
        raise DataError(f"--calibration-dir {root}: no readable images")
    return np.stack(xs)


# ---------------------------------------------------------------- conversion
def _tflite(model, kind: str, calib: np.ndarray | None, int8_io: str) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if kind == "f16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif kind == "int8":
        if calib is None or not len(calib):
            raise ExportError("int8 needs calibration images: the run's data was not available; pass --data-dir "
                              "or --calibration-dir")

        def representative():
            for img in calib:
                yield [img[None].astype(np.float32)]

        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io == "int8":
            conv.inference_input_type = tf.int8
            conv.inference_output_type = tf.int8
    return conv.convert()


class _Silenced:
    """Converter/exporter chatter (signature dumps, MLIR logs) off stdout/stderr; exceptions still propagate."""

    def __enter__(self):
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = [os.dup(1), os.dup(2)]
        self._null = open(os.devnull, "w")
        os.dup2(self._null.fileno(), 1)
        os.dup2(self._null.fileno(), 2)
        return self

    def __exit__(self, *exc):
        import os
        import sys

        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self._saved[0], 1)
        os.dup2(self._saved[1], 2)
        for fd in self._saved:
            os.close(fd)
        self._null.close()
        return False


def _latency(fn, x1: np.ndarray, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn(x1)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn(x1)
        times.append((time.perf_counter() - t) * 1000.0)
    return statistics.median(times)


def export(model_uri: str, out_dir: str | Path, client=None, data_dir: str | None = None,
           calibration_dir: str | None = None, calibration_count: int = 150, runs: int = 50, warmup: int = 5,
           int8_io: str = "float", formats=FORMATS, log_to_run: bool = True, max_eval: int | None = None,
           progress=None) -> ExportReport:
    import tensorflow as tf

    say = progress or (lambda msg: None)
    model, ref = load(model_uri, client)
    out = Path(out_dir)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    (out / "model_info.json").write_text(json.dumps(dict(ref.meta, int8_io=int8_io), indent=2))
    say(f"model {ref.describe()}")
    data = eval_data(ref, client, data_dir, calibration_dir, calibration_count)
    notes = list(data.notes)
    if max_eval and data.x_val is not None and len(data.x_val) > max_eval:
        data.x_val, data.y_val = data.x_val[:max_eval], data.y_val[:max_eval]
    h, w = ref.input_size
    x1 = (data.x_val[:1] if data.x_val is not None else np.full((1, h, w, 3), 128, np.uint8)).astype(np.float32)
    model(x1)  # builds the model's call graph (needed by the ONNX route for a freshly loaded model)

    runners: dict[str, tuple[object, Path]] = {}
    keras_file = out / "model.keras"
    model.save(keras_file)
    # predict_on_batch runs the compiled graph: a fair batch-1 latency (an eager call pays per-layer Python cost)
    runners["keras"] = (lambda x: np.asarray(model.predict_on_batch(x)), keras_file)

    from .predict import TFLiteRunner

    for fmt_name in formats:
        if fmt_name == "keras":
            continue
        say(f"exporting {fmt_name}")
        try:
            if fmt_name == "savedmodel":
                path = out / "savedmodel"
                with _Silenced():
                    model.export(str(path), format="tf_saved_model", verbose=False)
                loaded = tf.saved_model.load(str(path))
                runners[fmt_name] = (lambda x, f=loaded.serve: np.asarray(f(tf.constant(x))), path)
            elif fmt_name.startswith("tflite_"):
                kind = fmt_name.split("_", 1)[1]
                path = out / f"model_{kind}.tflite"
                with _Silenced():
                    flat = _tflite(model, kind, data.x_calib, int8_io)
                path.write_bytes(flat)
                runner = TFLiteRunner(path, num_threads=1)
                runners[fmt_name] = (lambda x, r=runner: r.predict(x), path)
            elif fmt_name == "onnx":
                path = out / "model.onnx"
                with _Silenced():
                    model.export(str(path), format="onnx", verbose=False)
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads = 1
                sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
                name = sess.get_inputs()[0].name
                runners[fmt_name] = (lambda x, s=sess, n=name: s.run(None, {n: x.astype(np.float32)})[0], path)
            else:
                raise ExportError(f"unknown format {fmt_name!r} (choose from {', '.join(FORMATS)})")
        except ExportError as exc:
            notes.append(f"{fmt_name}: skipped: {exc}")
        except Exception as exc:  # noqa: BLE001 - one failing format must not lose the others
            notes.append(f"{fmt_name}: failed: {_first_line(exc)}")

    rows = []
    keras_probs = None
    if data.x_val is not None:
        keras_probs = np.concatenate([runners["keras"][0](data.x_val[i:i + 64].astype(np.float32))
                                      for i in range(0, len(data.x_val), 64)])
    from .evaluate import scores

    for fmt_name, (fn, path) in runners.items():
        say(f"measuring {fmt_name}")
        row = FormatRow(fmt_name, str(path.relative_to(out)), _size(path))
        try:
            row.latency_ms = _latency(fn, x1, runs, warmup)
            if data.x_val is not None:
                if fmt_name == "keras":
                    probs = keras_probs
                elif fmt_name.startswith("tflite_"):
                    probs = fn(data.x_val.astype(np.float32))
                else:
                    probs = np.concatenate([fn(data.x_val[i:i + 64].astype(np.float32))
                                            for i in range(0, len(data.x_val), 64)])
                row.balanced_accuracy = scores(data.y_val, probs)["balanced_accuracy"]
                row.agreement = float(np.mean(probs.argmax(1) == keras_probs.argmax(1)))
                row.max_abs_diff = float(np.max(np.abs(probs - keras_probs)))
        except Exception as exc:  # noqa: BLE001
            row.error = _first_line(exc)
        rows.append(row)
    report = ExportReport(model_uri, ref.run_id, str(out), data.source, int8_io, rows, notes)
    (out / "report.json").write_text(json.dumps(report.to_json(), indent=2))
    (out / "report.md").write_text(report.markdown())
    if log_to_run and ref.run_id and client is not None:
        say(f"logging to run {ref.run_id} under export/")
        try:
            client.log_artifacts(ref.run_id, str(out), "export")
            report.logged_to = f"runs:/{ref.run_id}/export"
        except Exception as exc:  # noqa: BLE001
            report.notes.append(f"could not log the export to run {ref.run_id}: {_first_line(exc)}")
        (out / "report.json").write_text(json.dumps(report.to_json(), indent=2))
    return report
