"""Every registered option builds from its registry entry and its YAML alone, as timm and Optuna test every entry of
their registries: a new schedule, optimiser, class-weight rule or averaging is covered the day it is registered.
(Backbones: tests/test_model.py; that each YAML names a registered option and back: tests/test_config.py.)"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from dermsweep.training import config
from dermsweep.training.averaging import AVERAGING, Averaging
from dermsweep.training.averaging import build as build_averaging
from dermsweep.training.class_weights import CLASS_WEIGHTS, class_weights
from dermsweep.training.optimizers import OPTIMIZERS
from dermsweep.training.optimizers import build as build_optimizer
from dermsweep.training.schedules import SCHEDULES, for_phase
from helpers.config import compose

HAM_COUNTS = np.array([327, 514, 1099, 115, 1113, 6705, 142])  # HAM10000's classes, rarest 115 (df)


def _valid(overrides: list[str]):
    cfg = compose(["data=synthetic", *overrides])
    config.validate(cfg)  # the entry's own key checks pass on its documented defaults
    return cfg


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_every_schedule_gives_a_positive_rate_within_the_peak(name):
    cfg = _valid([f"schedule={name}"])
    plan = for_phase(cfg.schedule, 1e-3, steps_per_epoch=10, epochs=5, objective="val_loss", mode="min")
    rate = plan.rate
    if isinstance(rate, keras.optimizers.schedules.LearningRateSchedule):
        rates = [float(keras.ops.convert_to_numpy(rate(step))) for step in (0, 25, 49)]
    else:
        rates = [float(rate)]
    assert all(0 < r <= 1e-3 * (1 + 1e-6) for r in rates), rates
    assert all(isinstance(c, keras.callbacks.Callback) for c in plan.callbacks)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_builds_with_the_rate_and_averaging_options(name):
    cfg = _valid([f"trainer.optimizer={name}", "trainer.weight_decay=0.01"])
    optimizer = build_optimizer(cfg.trainer, 2e-3, use_ema=True, ema_momentum=0.9)
    assert isinstance(optimizer, keras.optimizers.Optimizer)
    assert np.isclose(float(keras.ops.convert_to_numpy(optimizer.learning_rate)), 2e-3)
    assert optimizer.use_ema


@pytest.mark.parametrize("name", CLASS_WEIGHTS.names())
def test_every_class_weight_rule_gives_finite_positive_weights_rare_classes_not_lighter(name):
    cfg = _valid([f"class_weight={name}"])
    y = np.repeat(np.arange(7), HAM_COUNTS // 10)
    weights = class_weights(cfg.class_weight, y, 7)
    if weights is None:  # "every image weighs the same": Keras gets no class_weight
        return
    w = np.array([weights[i] for i in range(7)])
    assert np.all(np.isfinite(w)) and np.all(w > 0)
    order = np.argsort(HAM_COUNTS // 10)
    assert np.all(np.diff(w[order]) <= 1e-9), w  # the rarer the class, the heavier (or as heavy) its images


@pytest.mark.parametrize("name", AVERAGING.names())
def test_every_averaging_builds_and_names_its_optimizer_options(name):
    cfg = _valid([f"trainer.averaging.name={name}"])
    averaging = build_averaging(cfg.trainer.averaging)
    assert isinstance(averaging, Averaging)
    options = averaging.optimizer_options()
    assert isinstance(options, dict)
    build_optimizer(cfg.trainer, 1e-3, **options)  # what fit() does with them
