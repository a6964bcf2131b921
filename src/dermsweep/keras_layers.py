"""The Keras layers a shipped dermsweep model is made of besides Keras' own: test-time views of the image and the
calibrated, prior-adjusted softmax. Built from `keras.ops` only, so every backend runs them and TFLite and ONNX
convert them to plain ops.

Registered for serialization under the package name "dermsweep": a process that loads a shipped `.keras` file must
have imported this module (dermsweep.tracking.model_ref does; the REST model carries it as a code path, and the
MLflow model carries the classes themselves).
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

PACKAGE = "dermsweep"


@keras.saving.register_keras_serializable(package=PACKAGE)
class DihedralView(keras.layers.Layer):
    """One view of a batch of images (n, h, w, c): `quarter_turns` rotations by 90 degrees, then a left-right
    mirror if `mirror`. Quarter turns 1 and 3 swap height and width."""

    def __init__(self, quarter_turns: int = 0, mirror: bool = False, **kwargs: Any) -> None:
        # float32 whatever the global policy: a view only moves pixels, and mixed precision must not round them.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.quarter_turns = int(quarter_turns) % 4
        self.mirror = bool(mirror)

    def call(self, images):
        x = images
        if self.quarter_turns == 2:
            x = ops.flip(ops.flip(x, axis=1), axis=2)
        elif self.quarter_turns in (1, 3):
            x = ops.transpose(x, (0, 2, 1, 3))  # a transpose is a quarter turn plus a mirror
            x = ops.flip(x, axis=2 if self.quarter_turns == 1 else 1)
        if self.mirror:
            x = ops.flip(x, axis=2)
        return x

    def compute_output_shape(self, input_shape):
        n, h, w, c = input_shape
        return (n, w, h, c) if self.quarter_turns in (1, 3) else (n, h, w, c)

    def get_config(self) -> dict:
        return {**super().get_config(), "quarter_turns": self.quarter_turns, "mirror": self.mirror}


@keras.saving.register_keras_serializable(package=PACKAGE)
class CalibratedSoftmax(keras.layers.Layer):
    """Logits in, probabilities out: softmax(logits / temperature + bias).

    temperature > 1 softens over-confident probabilities (fitted on validation for calibration); the bias per
    class shifts decisions against the training prior (logit adjustment: -tau * log(prior), tau chosen on
    validation). temperature 1 and no bias is the plain softmax.
    """

    def __init__(self, temperature: float = 1.0, bias: list[float] | None = None, **kwargs: Any) -> None:
        # Probabilities are computed in float32 even under mixed precision (a bfloat16 softmax rows sum to ~0.996).
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.temperature = float(temperature)
        self.bias = [float(b) for b in bias] if bias is not None else None

    def call(self, logits):
        z = logits / self.temperature
        if self.bias is not None:
            z = z + ops.convert_to_tensor(self.bias, dtype=z.dtype)
        return ops.softmax(z, axis=-1)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "temperature": self.temperature, "bias": self.bias}


def custom_objects() -> dict[str, type]:
    """Registered names -> classes, for loaders that take custom_objects (MLflow's Keras flavour)."""
    return {keras.saving.get_registered_name(cls): cls for cls in (DihedralView, CalibratedSoftmax)}
