"""Learning-rate schedules, one per `conf/schedule/<name>.yaml`, each registered with the checks of its keys.

A schedule gives, for one training phase, the rate (a float or a keras LearningRateSchedule) and any callbacks
it needs (plateau watches the objective). keras is imported when a schedule is made, not with the module (see
backbones.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..checks import Range
from ..options import Options


@dataclass
class PhaseSchedule:
    rate: Any  # float or keras.optimizers.schedules.LearningRateSchedule
    callbacks: list = field(default_factory=list)


# (cfg, peak rate, steps per epoch, epochs, objective, mode) -> PhaseSchedule
Schedule = Callable[[Any, float, int, int, str, str], PhaseSchedule]
SCHEDULES: Options[Schedule] = Options("schedule.name")


@SCHEDULES.register("constant")
def constant(cfg, lr: float, steps_per_epoch: int, epochs: int, objective: str, mode: str) -> PhaseSchedule:
    return PhaseSchedule(lr)


@SCHEDULES.register(
    "plateau",
    factor=Range(0, 1, lo_open=True, hi_open=True),
    patience=Range(1, integer=True),
    min_lr=Range(0),
)
def plateau(cfg, lr: float, steps_per_epoch: int, epochs: int, objective: str, mode: str) -> PhaseSchedule:
    import keras

    reduce = keras.callbacks.ReduceLROnPlateau(
        monitor=objective,
        mode=mode,
        factor=float(cfg.factor),
        patience=int(cfg.patience),
        min_lr=float(cfg.min_lr),
        verbose=0,
    )
    return PhaseSchedule(lr, [reduce])


@SCHEDULES.register("cosine", warmup_fraction=Range(0, 0.5), alpha=Range(0, 1))
def cosine(cfg, lr: float, steps_per_epoch: int, epochs: int, objective: str, mode: str) -> PhaseSchedule:
    import keras

    total = max(1, steps_per_epoch * epochs)
    warmup = int(total * float(cfg.warmup_fraction))
    if warmup == 0:
        return PhaseSchedule(keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=float(cfg.alpha)))
    return PhaseSchedule(
        keras.optimizers.schedules.CosineDecay(
            lr * 0.01,
            decay_steps=max(1, total - warmup),
            alpha=float(cfg.alpha),
            warmup_target=lr,
            warmup_steps=warmup,
        )
    )


@SCHEDULES.register("exponential", decay_rate=Range(0, 1, lo_open=True))
def exponential(cfg, lr: float, steps_per_epoch: int, epochs: int, objective: str, mode: str) -> PhaseSchedule:
    import keras

    return PhaseSchedule(keras.optimizers.schedules.ExponentialDecay(lr, steps_per_epoch, float(cfg.decay_rate)))


def for_phase(cfg, lr: float, steps_per_epoch: int, epochs: int, objective: str, mode: str) -> PhaseSchedule:
    return SCHEDULES.get(cfg.name)(cfg, lr, steps_per_epoch, epochs, objective, mode)
