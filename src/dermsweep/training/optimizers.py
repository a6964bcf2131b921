"""Optimisers, one per `trainer.optimizer` value: (trainer config, learning rate, options every Keras optimiser
takes, e.g. use_ema from averaging.py) -> a Keras optimiser.

keras is imported when an optimiser is built, not with the module (see backbones.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from ..options import Options

if TYPE_CHECKING:
    import keras

OPTIMIZERS: Options[Callable[..., keras.optimizers.Optimizer]] = Options("trainer.optimizer")


@OPTIMIZERS.register("adam")
def adam(trainer_cfg, lr, **options) -> keras.optimizers.Optimizer:
    import keras

    return keras.optimizers.Adam(lr, **options)


@OPTIMIZERS.register("adamw")
def adamw(trainer_cfg, lr, **options) -> keras.optimizers.Optimizer:
    import keras

    return keras.optimizers.AdamW(lr, weight_decay=float(trainer_cfg.weight_decay), **options)


@OPTIMIZERS.register("sgd")
def sgd(trainer_cfg, lr, **options) -> keras.optimizers.Optimizer:
    import keras

    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, **options)


def build(trainer_cfg, lr, **options) -> keras.optimizers.Optimizer:
    return OPTIMIZERS.get(trainer_cfg.optimizer)(trainer_cfg, lr, **options)
