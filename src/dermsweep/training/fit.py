"""Two-phase transfer learning: (1) backbone frozen, new head trained; (2) fine-tuning above the frozen depth.

One validation pass per epoch computes every metric (evaluate.scores), drives early stopping, keeps the best
weights and hands the epoch's figures to `on_epoch` (tracking, pruning, progress). The best weights over both
phases are restored at the end. What is validated and kept is the averaged weights where `trainer.averaging` asks
for it (averaging.py); early stopping and the best epoch follow the objective's running mean over
`trainer.objective_smoothing` epochs (smoothing.py), while the per-epoch figures logged stay the epoch's own.

The best weights are kept in memory (a copy costs milliseconds; an HDF5 save cost 0.2-0.5 s, several times per
short trial) and written to the checkpoint file when training stops on an error or Ctrl-C, and on improvement
at most every CHECKPOINT_EVERY_S, so a SIGKILLed run loses at most that much progress.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from ..errors import TrainingDiverged
from ..evaluation.metrics import scores
from ..objectives import better
from . import averaging, optimizers, schedules
from .averaging import Averaging
from .batch_predict import predict
from .config import objectives
from .model import set_finetune_depth
from .smoothing import RunningMean

# on_epoch(epoch, phase, figures): figures holds loss/accuracy/top2_accuracy (training), val_* and lr, and the
# epoch's seconds of training (epoch_seconds, MLflow epoch/train_seconds) and of validation (val_seconds, MLflow
# epoch/val_seconds): the speed figures of docs/gpu.md.
EpochHook = Callable[[int, str, dict[str, float]], None]


@dataclass
class FitResult:
    history: dict[str, list[float]] = field(default_factory=dict)
    best_epoch: int = 0
    best_value: float = math.nan
    frozen_epochs_run: int = 0
    seconds: float = 0.0
    frozen_layers: int = 0


@dataclass(frozen=True)
class Phase:
    name: str  # frozen | finetune
    epochs: int
    lr: float


@dataclass(frozen=True)
class FitPlan:
    """What fit() takes from a run's config, and nothing more. The optimiser, schedule and averaging stay config
    nodes: their registries (optimizers, schedules, averaging) own the keys each option reads."""

    phases: tuple[Phase, ...]  # in order; a phase of 0 epochs is skipped
    objective: str  # the first objective: early stopping and the best weights follow it
    direction: str  # maximize | minimize
    trainer: Any  # trainer node: optimizer, weight_decay, averaging (optimizers.build, averaging.build)
    schedule: Any  # schedule node (schedules.for_phase)
    label_smoothing: float
    patience: int | None  # epochs without improvement before a phase stops; None = never
    smoothing: int  # epochs in the objective's running mean
    run_eagerly: bool
    pretrained: bool  # a pretrained backbone is frozen in phase 1 and unfrozen above frozen_fraction in phase 2
    frozen_fraction: float
    train_batchnorm: bool

    @classmethod
    def of(cls, cfg) -> FitPlan:
        trainer = cfg.trainer
        objective, direction = objectives(cfg)[0]
        patience = trainer.early_stopping_patience
        return cls(
            phases=tuple(
                Phase(name, int(trainer[name].epochs), float(trainer[name].lr)) for name in ("frozen", "finetune")
            ),
            objective=objective,
            direction=direction,
            trainer=trainer,
            schedule=cfg.schedule,
            label_smoothing=float(trainer.label_smoothing),
            patience=None if patience is None else int(patience),
            smoothing=int(trainer.objective_smoothing),
            run_eagerly=bool(trainer.run_eagerly),
            pretrained=cfg.model.weights is not None,
            frozen_fraction=float(cfg.model.frozen_fraction),
            train_batchnorm=bool(cfg.model.train_batchnorm),
        )


CHECKPOINT_EVERY_S = 60.0


@dataclass
class _Best:
    """The best objective value so far, and the model's weights at that epoch."""

    direction: str  # maximize | minimize
    checkpoint: Path
    value: float = math.nan
    epoch: int = 0
    weights: list = field(default_factory=list)  # [(variable, value at the best epoch)]
    saved_epoch: int = 0
    saved_at: float = field(default_factory=time.perf_counter)

    def improved(self, value: float) -> bool:
        return better(value, self.value, self.direction)

    def keep(self, model: keras.Model, value: float, epoch: int) -> None:
        self.value, self.epoch = value, epoch
        self.weights = [(v, keras.ops.convert_to_numpy(v)) for v in model.weights]
        if time.perf_counter() - self.saved_at >= CHECKPOINT_EVERY_S:
            self.save(model)

    def restore(self) -> None:
        for variable, value in self.weights:
            variable.assign(value)

    def save(self, model: keras.Model) -> None:
        """Write the best weights to the checkpoint file (the model's current weights are left as they were)."""
        if not self.epoch or self.saved_epoch == self.epoch:
            return
        current = [keras.ops.convert_to_numpy(v) for v, _ in self.weights]
        self.restore()
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(self.checkpoint)
        for (variable, _), value in zip(self.weights, current, strict=False):
            variable.assign(value)
        self.saved_epoch, self.saved_at = self.epoch, time.perf_counter()


class _EpochEvaluator(keras.callbacks.Callback):
    """Validation metrics, NaN guard, best checkpoint, early stopping and the per-epoch hook."""

    def __init__(
        self,
        val_ds,
        y_val,
        objective: str,
        best: _Best,
        patience: int | None,
        phase: str,
        on_epoch: EpochHook,
        result: FitResult,
        averager: Averaging | None = None,
        smoothed: RunningMean | None = None,
    ):
        super().__init__()
        self.val_ds, self.y_val = val_ds, y_val
        self.objective, self.best = objective, best
        self.patience, self.phase, self.on_epoch, self.result = patience, phase, on_epoch, result
        self.averager = averager or Averaging()
        self.smoothed = smoothed or RunningMean(1)
        self.smoothed.reset()  # one curve per phase: the frozen phase's figures say little about fine-tuning's
        self.waited = 0
        self.phase_best = math.nan
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        trained = time.perf_counter()
        logs = logs if logs is not None else {}
        loss = float(logs.get("loss", math.nan))
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"training loss became {loss} in epoch {epoch + 1} ({self.phase} phase); lower the learning rate "
                f"(trainer.{self.phase}.lr) or check the data"
            )
        self.averager.after_epoch(self.model, self.phase)
        with self.averager.evaluated(self.model, self.phase):
            probs = predict(self.model, self.val_ds)
            if not np.isfinite(probs).all():
                raise TrainingDiverged(f"validation predictions became NaN in epoch {epoch + 1} ({self.phase} phase)")
            val = {f"val_{k}": v for k, v in scores(self.y_val, probs).items()}
            value = self.smoothed.add(val[self.objective])
            if self.best.improved(value):
                self.best.keep(self.model, value, epoch + 1)
            # Patience counts against this phase's own best, not the run's: fine-tuning starts with a dip of a few
            # epochs below the frozen phase's best (the backbone unfrozen, the rate warming up), which the run's
            # best would have cut short (a recipe fold stopped at epoch 9 of 20 that way, 0.52 against 0.68).
            if better(value, self.phase_best, self.best.direction):
                self.phase_best = value
                self.waited = 0
            else:
                self.waited += 1
                if self.patience is not None and self.waited >= self.patience:
                    self.model.stop_training = True
        logs.update(val)  # ReduceLROnPlateau (after us in the list) reads the objective from logs
        figures = {k: float(logs[k]) for k in ("loss", "accuracy", "top2_accuracy") if k in logs}
        figures.update(val)
        figures["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        figures["epoch_seconds"] = trained - self.started
        figures["val_seconds"] = time.perf_counter() - trained
        for k, v in figures.items():
            self.result.history.setdefault(k, []).append(v)
        self.on_epoch(epoch + 1, self.phase, figures)  # may raise optuna.TrialPruned: training stops at once


def fit(
    model: keras.Model,
    train_ds,
    steps_per_epoch: int,
    val_ds,
    y_val,
    plan: FitPlan,
    class_weight,
    checkpoint: Path,
    on_epoch: EpochHook,
    scope,
) -> FitResult:
    """Train `model` in the plan's phases; returns the history with the best weights restored."""
    best = _Best(plan.direction, checkpoint)
    result = FitResult()
    start = time.perf_counter()
    try:
        _run_phases(model, train_ds, steps_per_epoch, val_ds, y_val, plan, class_weight, best, on_epoch, scope, result)
    except BaseException:
        best.save(model)  # whatever stopped training (an error, Ctrl-C, a dead tracking store), keep the best
        raise
    if best.epoch:
        best.restore()
    result.best_epoch, result.best_value = best.epoch, best.value
    result.seconds = time.perf_counter() - start
    return result


def _run_phases(
    model,
    train_ds,
    steps_per_epoch,
    val_ds,
    y_val,
    plan: FitPlan,
    class_weight,
    best: _Best,
    on_epoch: EpochHook,
    scope,
    result: FitResult,
) -> None:
    loss = keras.losses.CategoricalCrossentropy(label_smoothing=plan.label_smoothing)
    averager = averaging.build(plan.trainer.averaging)
    smoothed = RunningMean(plan.smoothing)
    epoch = 0
    for phase in plan.phases:
        if phase.epochs <= 0:
            continue
        if phase.name == "finetune":
            if best.epoch:
                best.restore()  # fine-tune from the best frozen-phase head, not the last
            if plan.pretrained:  # a random-init backbone is already fully trainable
                result.frozen_layers = set_finetune_depth(model, plan.frozen_fraction, plan.train_batchnorm)
        mode = "max" if best.direction == "maximize" else "min"
        schedule = schedules.for_phase(plan.schedule, phase.lr, steps_per_epoch, phase.epochs, plan.objective, mode)
        with scope():
            model.compile(
                optimizer=optimizers.build(plan.trainer, schedule.rate, **averager.optimizer_options()),
                loss=loss,
                metrics=["accuracy", keras.metrics.TopKCategoricalAccuracy(k=2, name="top2_accuracy")],
                run_eagerly=plan.run_eagerly,
            )
        evaluator = _EpochEvaluator(
            val_ds, y_val, plan.objective, best, plan.patience, phase.name, on_epoch, result, averager, smoothed
        )
        model.fit(
            train_ds.from_epoch(epoch),  # the stream's batches for this epoch on, whatever came before
            epochs=epoch + phase.epochs,
            initial_epoch=epoch,
            steps_per_epoch=steps_per_epoch,
            class_weight=class_weight,
            callbacks=[evaluator, *schedule.callbacks],
            shuffle=False,  # the pipeline shuffles
            verbose=0,
        )
        epoch = len(result.history.get("loss", []))
        if phase.name == "frozen":
            result.frozen_epochs_run = epoch
