"""One converter per export format, in a table: how to write the format from a Keras model, and how to run the
written file on raw 0-255 pixels (for the latency and agreement checks, and for predict)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DermsweepError
from ..quiet import silenced
from .defaults import FORMATS
from .int8 import Int8Options, Validation, quantize

Runner = Callable[[np.ndarray], np.ndarray]  # float32 pixels (n, H, W, 3) -> probabilities (n, k)
Details = dict[str, Any] | None  # what a writer found out while writing (the report shows it under the format)


class ExportError(DermsweepError):
    """A format could not be produced or checked."""


@dataclass(frozen=True)
class Converter:
    file: str  # file or folder name inside the export folder
    write: Callable[[Any, Path, Context], Details]
    runner: Callable[[Path], Runner]


@dataclass
class Context:
    calibration: np.ndarray | None  # uint8 images for int8 calibration (training split)
    int8_io: str  # "float" (int8 inside, float at the edges) or "int8"
    validation: Validation | None = None  # labelled validation images + Keras' probabilities: int8's search
    int8: Int8Options = field(default_factory=Int8Options)
    progress: Callable[[str], None] = lambda msg: None


def onnx_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session (one thread: latency figures are per core, like the browser's single thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3  # errors only: its warnings list each unused initializer by TF op name
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _write_savedmodel(model, path: Path, ctx: Context) -> Details:
    with silenced():
        model.export(str(path), format="tf_saved_model", verbose=False)
    return None


def _run_savedmodel(path: Path) -> Runner:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # held by the closure: its variables die with it
    return lambda x: np.asarray(loaded.serve(tf.constant(x, dtype=tf.float32)))


def _calibration(ctx: Context) -> np.ndarray:
    if ctx.calibration is None or not len(ctx.calibration):
        raise ExportError(
            "int8 needs calibration images: the run's data was not available; pass --data-dir or --calibration-dir"
        )
    return ctx.calibration


def _write_int8(model, path: Path, ctx: Context) -> Details:
    """int8 that keeps quality: the layers that lose most stay float (int8.py), chosen on validation."""
    result = quantize(model, _calibration(ctx), ctx.validation, ctx.int8, ctx.int8_io, ctx.progress)
    path.write_bytes(result.model)
    return result.report


def _tflite_writer(kind: str):
    def write(model, path: Path, ctx: Context) -> Details:
        import tensorflow as tf

        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if kind == "f16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        elif kind == "int8_full":
            calib = _calibration(ctx)

            def representative():
                for img in calib:
                    yield [img[None].astype(np.float32)]

            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.representative_dataset = representative
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if ctx.int8_io == "int8":
                conv.inference_input_type = tf.int8
                conv.inference_output_type = tf.int8
        with silenced():
            path.write_bytes(conv.convert())
        return None

    return write


def _run_tflite(path: Path) -> Runner:
    from .predict import TFLiteRunner

    return TFLiteRunner(path, num_threads=1).predict


def _write_onnx(model, path: Path, ctx: Context) -> Details:
    with silenced():
        model.export(str(path), format="onnx", verbose=False)
    return None


def _run_onnx(path: Path) -> Runner:
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.asarray(x, dtype=np.float32)})[0]


CONVERTERS: dict[str, Converter] = {
    "savedmodel": Converter("savedmodel", _write_savedmodel, _run_savedmodel),
    "tflite_f32": Converter("model_f32.tflite", _tflite_writer("f32"), _run_tflite),
    "tflite_f16": Converter("model_f16.tflite", _tflite_writer("f16"), _run_tflite),
    # full-integer int8 (TFLITE_BUILTINS_INT8 only): every op int8, for integer-only accelerators; it fails on an op
    # with no int8 kernel
    "tflite_int8_full": Converter("model_int8_full.tflite", _tflite_writer("int8_full"), _run_tflite),
    # int8 with the layers that lose most kept float, chosen on validation (int8.py): the one apps ship
    "tflite_int8": Converter("model_int8.tflite", _write_int8, _run_tflite),
    "onnx": Converter("model.onnx", _write_onnx, _run_onnx),
}
if ("keras", *CONVERTERS) != FORMATS:  # the list --help shows without importing this module
    raise RuntimeError(f"shipping/defaults.py FORMATS {FORMATS} != keras + {tuple(CONVERTERS)}")
