"""Weight averaging, one per `trainer.averaging.name`: what each epoch's validation scores, and what the checkpoint
keeps, is an average of the recent weights instead of the last step's, which one noisy batch can move.

- none: the weights as trained.
- ema: an exponential moving average of the weights after every step, kept by the Keras optimiser itself
  (`use_ema`, `ema_momentum`: the same code on TensorFlow, JAX and PyTorch). Each phase's optimiser starts its own.
- swa: stochastic weight averaging (Izmailov et al. 2018) over a sliding window: in fine-tuning, the mean of the
  weights at the end of the last `swa_epochs` epochs. Early stopping may end a phase at any epoch, so the window
  slides rather than starting at a fixed epoch.

Training itself always goes on from the trained weights: `evaluated(model, phase)` swaps the averaged ones in for
the epoch's validation and checkpoint and puts the trained ones back afterwards. Only trainable weights are
averaged; BatchNorm statistics stay as trained (frozen in the pretrained recipe, so the same).
keras is imported when needed, not with the module (see backbones.py).
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from ..checks import Range
from ..options import Options

FINETUNE = "finetune"


class Averaging:
    """No averaging: the base the others override."""

    def optimizer_options(self) -> dict[str, Any]:
        """Keyword arguments for the phase's Keras optimiser."""
        return {}

    def after_epoch(self, model, phase: str) -> None:
        """Called at each epoch's end, before `evaluated`, with the trained weights in the model."""

    @contextlib.contextmanager
    def evaluated(self, model, phase: str) -> Iterator[None]:
        """Within: the model holds the weights to validate and keep for this epoch."""
        yield


class ExponentialAverage(Averaging):
    def __init__(self, momentum: float):
        self.momentum = float(momentum)

    def optimizer_options(self) -> dict[str, Any]:
        return {"use_ema": True, "ema_momentum": self.momentum}

    @contextlib.contextmanager
    def evaluated(self, model, phase: str) -> Iterator[None]:
        trained = _snapshot(model)
        # The optimiser's public way to write its averages into the model (Keras does the same at fit's end).
        model.optimizer.finalize_variable_values(model.trainable_variables)
        try:
            yield
        finally:
            _assign(model, trained)


class WindowAverage(Averaging):
    def __init__(self, epochs: int):
        self.epochs = int(epochs)
        self.window: deque[list] = deque(maxlen=self.epochs)
        self.phase = ""

    def after_epoch(self, model, phase: str) -> None:
        if phase != self.phase:  # a new phase (other trainable layers): a new window
            self.window.clear()
            self.phase = phase
        if phase == FINETUNE:
            self.window.append(_snapshot(model))

    @contextlib.contextmanager
    def evaluated(self, model, phase: str) -> Iterator[None]:
        if phase != FINETUNE or not self.window:
            yield
            return
        trained = self.window[-1]
        _assign(model, [sum(values) / len(self.window) for values in zip(*self.window, strict=True)])
        try:
            yield
        finally:
            _assign(model, trained)


def _snapshot(model) -> list:
    import keras

    return [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]


def _assign(model, values: list) -> None:
    for variable, value in zip(model.trainable_variables, values, strict=True):
        variable.assign(value)


AVERAGING: Options[Callable[[Any], Averaging]] = Options("trainer.averaging.name")


@AVERAGING.register("none")
def none(cfg) -> Averaging:
    return Averaging()


@AVERAGING.register("ema", ema_momentum=Range(0, 1, lo_open=True, hi_open=True))
def ema(cfg) -> Averaging:
    return ExponentialAverage(float(cfg.ema_momentum))


@AVERAGING.register("swa", swa_epochs=Range(1, integer=True))
def swa(cfg) -> Averaging:
    return WindowAverage(int(cfg.swa_epochs))


def build(averaging_cfg) -> Averaging:
    return AVERAGING.get(averaging_cfg.name)(averaging_cfg)
