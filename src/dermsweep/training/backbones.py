"""Pretrained backbones, one per `conf/model/<name>.yaml` (`model.name`). Each entry says all the rest of the code
needs to know about it: how to build it (its keras.applications constructor and that constructor's own arguments
from the model config), how to scale raw 0-255 pixels for it, which of its keys to check, which widths have
published ImageNet weights, its label in run names and model metadata, and its last convolution (Grad-CAM).

Adding a backbone is one `BACKBONES.add(...)` here and one YAML in `conf/model/`.

Importing this module does not import keras (config validation reads it, and the sweep's pre-flight validates
before the first job has chosen the Keras backend: keras_backend.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..checks import Range, fail
from ..options import Options


def _application(name: str) -> Callable[..., Any]:
    """keras.applications.<name>, looked up when a model is built."""

    def build(**kwargs):
        import keras

        return getattr(keras.applications, name)(**kwargs)

    return build


@dataclass(frozen=True)
class Backbone:
    build: Callable[..., Any]  # keras.applications constructor: (input_shape, include_top, weights, **arguments)
    last_conv: str  # name of the last convolutional activation inside the backbone
    # Raw RGB 0-255 -> what the network was trained on: x * scale + offset, baked into the model (a Rescaling
    # layer). MobileNets expect [-1, 1]; networks that scale inside themselves (EfficientNet) take 1 and 0.
    scale: float = 1.0 / 127.5
    offset: float = -1.0
    width_key: str | None = "alpha"  # the model-config key holding the width multiplier; None: no such knob
    imagenet_widths: tuple[float, ...] = ()  # widths keras.applications has ImageNet weights for
    short_name: str = ""  # run names: "v1" -> "v1-a0.25-..."
    extra: dict[str, Any] = field(default_factory=dict)  # constant constructor arguments

    def arguments(self, model_cfg) -> dict[str, Any]:
        """The constructor's own arguments beyond input_shape, include_top and weights."""
        width = {self.width_key: float(model_cfg[self.width_key])} if self.width_key else {}
        return {**width, **self.extra}

    def label(self, model_cfg) -> str:
        """How run names show this backbone and its width: v1-a0.25, effb0."""
        name = self.short_name or str(model_cfg.name)
        return f"{name}-a{float(model_cfg[self.width_key]):g}" if self.width_key else name

    def describe(self, model_cfg) -> dict[str, Any]:
        """The model metadata's backbone fields (model card, predict)."""
        return {
            "backbone": str(model_cfg.name),
            **({"alpha": float(model_cfg[self.width_key])} if self.width_key else {}),
        }

    def check_imagenet(self, model_cfg) -> None:
        """model.weights=imagenet needs a width keras.applications publishes weights for."""
        if not self.width_key:
            return
        width = float(model_cfg[self.width_key])
        if width not in self.imagenet_widths:
            fail(
                f"model.{self.width_key}",
                width,
                f"{model_cfg.name} has ImageNet weights only for widths {', '.join(map(str, self.imagenet_widths))}; "
                "pick one, or set model.weights=null",
            )


BACKBONES: Options[Backbone] = Options("model.name")
WIDTH = Range(0, 2, lo_open=True)
BACKBONES.add(
    "mobilenet_v1",
    Backbone(_application("MobileNet"), "conv_pw_13_relu", imagenet_widths=(0.25, 0.5, 0.75, 1.0), short_name="v1"),
    alpha=WIDTH,
)
BACKBONES.add(
    "mobilenet_v2",
    Backbone(
        _application("MobileNetV2"), "out_relu", imagenet_widths=(0.35, 0.5, 0.75, 1.0, 1.3, 1.4), short_name="v2"
    ),
    alpha=WIDTH,
)
