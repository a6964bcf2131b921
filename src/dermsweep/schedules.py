"""Learning-rate schedules per phase, from the `schedule` config."""
from __future__ import annotations

import keras


def learning_rate(cfg, lr: float, steps_per_epoch: int, epochs: int):
    """A float or a keras LearningRateSchedule for one phase of `epochs` epochs."""
    total = max(1, steps_per_epoch * epochs)
    if cfg.name in ("constant", "plateau"):
        return lr
    if cfg.name == "cosine":
        warmup = int(total * float(cfg.warmup_fraction))
        if warmup == 0:
            return keras.optimizers.schedules.CosineDecay(lr, decay_steps=total, alpha=float(cfg.alpha))
        return keras.optimizers.schedules.CosineDecay(
            lr * 0.01, decay_steps=max(1, total - warmup), alpha=float(cfg.alpha), warmup_target=lr,
            warmup_steps=warmup,
        )
    if cfg.name == "exponential":
        return keras.optimizers.schedules.ExponentialDecay(lr, steps_per_epoch, float(cfg.decay_rate))
    raise ValueError(f"unknown schedule {cfg.name!r}")


def callbacks(cfg, monitor: str, mode: str) -> list:
    if cfg.name == "plateau":
        return [
            keras.callbacks.ReduceLROnPlateau(
                monitor=monitor, mode=mode, factor=float(cfg.factor), patience=int(cfg.patience),
                min_lr=float(cfg.min_lr), verbose=0,
            )
        ]
    return []
