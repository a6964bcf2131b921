"""Classify image files with the trained model: the exact training preprocessing, top-k diagnoses.

A bad file (not an image, truncated, unreadable) gets an error entry and the other files are still classified.
Works with any model reference model_io accepts, or with an exported .tflite file (float or int8).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.images import BadImage, load_rgb
from ..diagnoses import flag, ranked
from ..quiet import redirected
from ..tracking import run_format as rf
from ..tracking.model_ref import ModelNotFound, complete_meta, load


@dataclass
class Prediction:
    path: str
    top: list[dict] = field(default_factory=list)  # [{label, name, probability}], best first
    probabilities: dict[str, float] = field(default_factory=dict)
    operating_point: dict | None = None  # the model's operating point verdict (diagnoses.flag), if it has one
    error: str | None = None

    def to_json(self) -> dict:
        return {
            "path": self.path,
            "top": self.top,
            "probabilities": self.probabilities,
            "operating_point": self.operating_point,
            "error": self.error,
        }


class TFLiteRunner:
    """TFLite inference on raw 0-255 pixels whatever the model's I/O types (float or int8/uint8): one image per call.

    A file converted from a model that takes any input size (training.model.build's classifier) has a dynamic input
    (signature -1 x -1 x -1 x 3, allocated as 1 x 1 x 1 x 3): the input tensor is resized to each image's size.
    """

    def __init__(self, path: str | Path, num_threads: int | None = None):
        import tensorflow as tf

        path = Path(path)
        if not path.is_file():
            raise ModelNotFound(f"no such TFLite file: {path}")
        try:
            with redirected(2):  # TFLite's C++ "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                self.interpreter = tf.lite.Interpreter(model_path=str(path), num_threads=num_threads)
                self.interpreter.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise ModelNotFound(f"cannot load TFLite model {path}: {str(exc).splitlines()[0]}") from exc
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        # shape_signature holds -1 where the size is free; `shape` is only what is allocated now (1 there)
        signature = self.input.get("shape_signature", self.input["shape"])
        self.height: int | None = int(signature[1]) if signature[1] > 0 else None
        self.width: int | None = int(signature[2]) if signature[2] > 0 else None
        self.num_classes = int(self.output["shape"][-1])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """One image (H, W, 3) uint8 or float 0-255 -> probabilities (k,) float32."""
        x = np.asarray(image, dtype=np.float32)
        if x.ndim != 3 or x.shape[-1] != 3:
            raise ValueError(f"TFLiteRunner takes one image (H, W, 3), not shape {x.shape}; use .predict for a batch")
        self._fit_input(x.shape[:2])
        x = x[None]
        dtype = self.input["dtype"]
        if dtype in (np.int8, np.uint8):
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(dtype)
        self.interpreter.set_tensor(self.input["index"], x)
        self.interpreter.invoke()
        y = self.interpreter.get_tensor(self.output["index"])[0]
        if self.output["dtype"] in (np.int8, np.uint8):
            scale, zero = self.output["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y.astype(np.float32)

    def predict(self, images: np.ndarray) -> np.ndarray:
        """A batch (n, H, W, 3), n >= 0 -> probabilities (n, k) float32."""
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(f"TFLiteRunner.predict takes a batch (n, H, W, 3), not shape {images.shape}")
        return np.stack([self(img) for img in images]) if len(images) else np.zeros((0, self.num_classes), np.float32)

    def _fit_input(self, size: tuple[int, int]) -> None:
        """Resize a dynamic input to this image's size (once per new size); a fixed one must match."""
        h, w = (int(v) for v in size)
        if (self.height or h, self.width or w) != (h, w):
            raise ValueError(f"this TFLite model takes {self.height}x{self.width} images, not {h}x{w}")
        if tuple(self.input["shape"]) != (1, h, w, 3):
            self.interpreter.resize_tensor_input(self.input["index"], [1, h, w, 3])
            self.interpreter.allocate_tensors()
            self.input = self.interpreter.get_input_details()[0]
            self.output = self.interpreter.get_output_details()[0]


class Predictor:
    """Holds a model (Keras or TFLite) and its metadata; `predict_files` classifies images."""

    def __init__(self, fn, meta: dict, source: str):
        self.fn, self.meta, self.source = fn, meta, source
        self.class_names = list(meta["class_names"])
        self.full_names = dict(meta.get("full_names") or {})
        self.operating_point = meta.get("operating_point")  # a threshold on one class, chosen on validation
        self.height, self.width = int(meta["input_height"]), int(meta["input_width"])

    @classmethod
    def from_uri(cls, uri: str, client=None) -> Predictor:
        model, ref = load(uri, client)
        return cls(lambda x: np.asarray(model.predict_on_batch(x.astype(np.float32))), ref.meta, ref.describe())

    @classmethod
    def from_tflite(cls, path: str | Path) -> Predictor:
        runner = TFLiteRunner(path)
        meta = {}
        sidecar = Path(path).with_name(rf.MODEL_INFO)
        if sidecar.is_file():
            meta = json.loads(sidecar.read_text())
        meta = complete_meta(meta, (None, runner.height, runner.width, 3), runner.num_classes)
        # a fixed input size wins over the sidecar; a dynamic one (None) takes the sidecar's
        if runner.height is not None and runner.width is not None:
            meta["input_height"], meta["input_width"] = runner.height, runner.width
        return cls(runner.predict, meta, str(path))

    def predict_arrays(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.fn(x), dtype=np.float64)

    def predict_files(self, paths: list[str | Path], top_k: int = 3, batch_size: int = 32) -> list[Prediction]:
        """One Prediction per path, in order; a bad file gets an `error` and the others are still classified.
        Files are decoded one batch at a time, so memory does not grow with the number of files."""
        results = [Prediction(str(p)) for p in paths]
        k = max(1, min(top_k, len(self.class_names)))
        for start in range(0, len(paths), batch_size):
            good, pixels = [], []
            for i in range(start, min(start + batch_size, len(paths))):
                try:
                    pixels.append(load_rgb(paths[i], self.height, self.width))
                    good.append(i)
                except BadImage as exc:
                    results[i].error = str(exc)
            if not pixels:
                continue
            probs = self.predict_arrays(np.stack(pixels))
            for i, p in zip(good, probs, strict=True):
                results[i].top = ranked(p, self.class_names, self.full_names, k)
                results[i].operating_point = flag(p, self.class_names, self.full_names, self.operating_point)
                results[i].probabilities = {c: float(v) for c, v in zip(self.class_names, p, strict=True)}
        return results
