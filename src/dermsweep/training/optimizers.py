"""Optimisers, one per `trainer.optimizer` value: (trainer config, learning rate) -> a Keras optimiser.

keras is imported when an optimiser is built, not with the module (see backbones.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..options import Options

if TYPE_CHECKING:
    import keras

OPTIMIZERS: Options[Callable[[Any, Any], keras.optimizers.Optimizer]] = Options("trainer.optimizer")


@OPTIMIZERS.register("adam")
def adam(trainer_cfg, lr) -> keras.optimizers.Optimizer:
    import keras

    return keras.optimizers.Adam(lr)


@OPTIMIZERS.register("adamw")
def adamw(trainer_cfg, lr) -> keras.optimizers.Optimizer:
    import keras

    return keras.optimizers.AdamW(lr, weight_decay=float(trainer_cfg.weight_decay))


@OPTIMIZERS.register("sgd")
def sgd(trainer_cfg, lr) -> keras.optimizers.Optimizer:
    import keras

    return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)


def build(trainer_cfg, lr) -> keras.optimizers.Optimizer:
    return OPTIMIZERS.get(trainer_cfg.optimizer)(trainer_cfg, lr)
