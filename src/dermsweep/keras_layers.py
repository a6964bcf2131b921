"""The Keras layers a shipped dermsweep model is made of besides Keras' own: colour constancy, test-time views of the
image and the calibrated, prior-adjusted softmax. Built from `keras.ops` only, so every backend runs them and
TFLite and ONNX convert them to plain ops.

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
class ShadesOfGray(keras.layers.Layer):
    """Colour constancy for a batch of RGB images 0-255 (Shades of Gray, Finlayson & Trezzi 2004): each image's
    illuminant is estimated per channel as the power mean of its pixels, (mean(I_c ** power)) ** (1 / power), and
    divided out, scaled so that a neutral illuminant (equal channels) leaves the image as it was. power 1 is Gray
    World; larger powers lean toward the brightest pixels (max-RGB as power grows); 6 is what ISIC challenge
    winners used against the colour casts of different dermatoscopes and lights. Inside the model, so every way
    of running it (predict, REST, TFLite, ONNX, the browser) applies it the same way."""

    def __init__(self, power: float = 6.0, **kwargs: Any) -> None:
        # float32 whatever the global policy: pixel ** 6 in float16 would lose the dark channels.
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.power = float(power)

    def call(self, images):
        x = images / 255.0  # the estimate is scale-free; 0-1 keeps x ** power well inside float32
        illuminant = ops.power(ops.mean(ops.power(x, self.power), axis=(1, 2), keepdims=True), 1.0 / self.power)
        illuminant = illuminant + 1e-6  # an all-black channel: gain finite, and 0 * gain stays 0
        unit = illuminant / ops.sqrt(ops.sum(ops.square(illuminant), axis=-1, keepdims=True))
        gains = 1.0 / (unit * 3.0**0.5)  # neutral light: unit = (1, 1, 1) / sqrt(3), gains 1
        return ops.clip(images * gains, 0.0, 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "power": self.power}


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
    return {keras.saving.get_registered_name(cls): cls for cls in (ShadesOfGray, DihedralView, CalibratedSoftmax)}
