"""Pretrained backbones, one per `conf/model/<name>.yaml` (`model.name`): how to build each, which widths have
published ImageNet weights, and which layer is its last convolution (Grad-CAM reads it).

Importing this module does not import keras (config validation reads it, and the sweep's pre-flight validates
before the first job has chosen the Keras backend: keras_backend.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..options import Options


def _application(name: str) -> Callable[..., Any]:
    """keras.applications.<name>, looked up when a model is built."""

    def build(**kwargs):
        import keras

        return getattr(keras.applications, name)(**kwargs)

    return build


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., Any]  # keras.applications constructor (input_shape, alpha, include_top, weights)
    imagenet_alphas: tuple[float, ...]  # widths keras.applications has ImageNet weights for
    last_conv: str  # name of the last convolutional activation inside the backbone


BACKBONES: Options[Backbone] = Options("model.name")
BACKBONES.add("mobilenet_v1", Backbone(_application("MobileNet"), (0.25, 0.5, 0.75, 1.0), "conv_pw_13_relu"))
BACKBONES.add("mobilenet_v2", Backbone(_application("MobileNetV2"), (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), "out_relu"))
