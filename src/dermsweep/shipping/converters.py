"""One converter per export format, in a table: how to write the format from a Keras model, and how to run the
written file on raw 0-255 pixels (for the latency and agreement checks, and for predict)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DermsweepError
from ..quiet import silenced

Runner = Callable[[np.ndarray], np.ndarray]  # float32 pixels (n, H, W, 3) -> probabilities (n, k)


class ExportError(DermsweepError):
    """A format could not be produced or checked."""


@dataclass(frozen=True)
class Converter:
    file: str  # file or folder name inside the export folder
    write: Callable[[Any, Path, Context], None]
    runner: Callable[[Path], Runner]


@dataclass
class Context:
    calibration: np.ndarray | None  # uint8 images for int8 calibration
    int8_io: str  # "float" (int8 inside, float at the edges) or "int8"


def onnx_session(path: str | Path, threads: int = 1):
    """An onnxruntime CPU session (one thread: latency figures are per core, like the browser's single thread)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def _write_savedmodel(model, path: Path, ctx: Context) -> None:
    with silenced():
        model.export(str(path), format="tf_saved_model", verbose=False)


def _run_savedmodel(path: Path) -> Runner:
    import tensorflow as tf

    loaded = tf.saved_model.load(str(path))  # held by the closure: its variables die with it
    return lambda x: np.asarray(loaded.serve(tf.constant(x, dtype=tf.float32)))


def _tflite_writer(kind: str):
    def write(model, path: Path, ctx: Context) -> None:
        import tensorflow as tf

        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        if kind == "f16":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
            conv.target_spec.supported_types = [tf.float16]
        elif kind == "int8":
            calib = ctx.calibration
            if calib is None or not len(calib):
                raise ExportError(
                    "int8 needs calibration images: the run's data was not available; pass "
                    "--data-dir or --calibration-dir"
                )

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

    return write


def _run_tflite(path: Path) -> Runner:
    from .predict import TFLiteRunner

    return TFLiteRunner(path, num_threads=1).predict


def _write_onnx(model, path: Path, ctx: Context) -> None:
    with silenced():
        model.export(str(path), format="onnx", verbose=False)


def _run_onnx(path: Path) -> Runner:
    session = onnx_session(path)
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: np.asarray(x, dtype=np.float32)})[0]


CONVERTERS: dict[str, Converter] = {
    "savedmodel": Converter("savedmodel", _write_savedmodel, _run_savedmodel),
    "tflite_f32": Converter("model_f32.tflite", _tflite_writer("f32"), _run_tflite),
    "tflite_f16": Converter("model_f16.tflite", _tflite_writer("f16"), _run_tflite),
    "tflite_int8": Converter("model_int8.tflite", _tflite_writer("int8"), _run_tflite),
    "onnx": Converter("model.onnx", _write_onnx, _run_onnx),
}
FORMATS = ("keras", *CONVERTERS)  # keras: the reference every other format is compared with
