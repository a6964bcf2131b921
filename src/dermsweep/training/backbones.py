"""Pretrained backbones, one per `conf/model/<name>.yaml` (`model.name`): how to build each, which widths have
published ImageNet weights, and which layer is its last convolution (Grad-CAM reads it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import keras

from ..options import Options


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., keras.Model]  # keras.applications constructor (input_shape, alpha, include_top, weights)
    imagenet_alphas: tuple[float, ...]  # widths keras.applications has ImageNet weights for
    last_conv: str  # name of the last convolutional activation inside the backbone


BACKBONES: Options[Backbone] = Options("model.name")
BACKBONES.add("mobilenet_v1", Backbone(keras.applications.MobileNet, (0.25, 0.5, 0.75, 1.0), "conv_pw_13_relu"))
BACKBONES.add("mobilenet_v2", Backbone(keras.applications.MobileNetV2, (0.35, 0.5, 0.75, 1.0, 1.3, 1.4), "out_relu"))
