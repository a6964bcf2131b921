"""Reproducible training and steadier checkpoints: two runs of one config and seed give the same figures and
weights, another seed does not; weight averaging (ema, swa) validates and keeps averaged weights; early stopping
and the best epoch follow the smoothed objective."""

from __future__ import annotations

import contextlib
import random
import time

import keras
import numpy as np
import pytest

from dermsweep.data.pipeline import eval_dataset, training_dataset
from dermsweep.data.stream import BatchStream
from dermsweep.training import determinism, fit, provenance
from dermsweep.training.averaging import ExponentialAverage, WindowAverage
from dermsweep.training.smoothing import RunningMean
from helpers.config import compose


def small_data(n=48, seed=0):
    """Images with a class signal (a bright patch whose corner depends on the class), 3 classes."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    x = rng.integers(0, 120, (n, 32, 32, 3)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, c * 10 : c * 10 + 10, c * 10 : c * 10 + 10] = 230
    return x, y


def small_model() -> keras.Model:
    """A few thousand weights, with dropout: what matters here is the feed, the seeds and fit(), not the backbone
    (a MobileNet made each run minutes on the shared CPUs)."""
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 127.5, offset=-1),
            keras.layers.Conv2D(8, 3, strides=2, activation="relu"),
            keras.layers.Conv2D(16, 3, strides=2, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.3),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )


def train(tmp_path, seed: int, *overrides: str):
    """One two-phase fit on the real feed (light augmentation, worker threads, tf.data on TensorFlow)."""
    cfg = compose(
        [
            "data=synthetic",
            "trainer=smoke",
            "model=mobilenet_v1",
            "augment=light",
            "trainer.steps_per_epoch=3",
            "trainer.batch_size=8",
            "trainer.frozen.epochs=2",
            "trainer.finetune.epochs=2",
            f"seed={seed}",
            *overrides,
        ]
    )
    provenance.seed_everything(seed)
    determinism.configure(bool(cfg.trainer.deterministic), keras.backend.backend())
    x, y = small_data()
    model = small_model()
    feed = training_dataset(x[:36], y[:36], 3, 8, cfg.augment, seed, 3, workers=2)
    result = fit.fit(
        model,
        feed,
        3,
        eval_dataset(x[36:], 8),
        y[36:],
        fit.FitPlan.of(cfg),
        None,
        tmp_path / f"{seed}.weights.h5",
        lambda *_: None,
        contextlib.nullcontext,
    )
    return result.history, [keras.ops.convert_to_numpy(v) for v in model.weights]


def same(a, b) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


@pytest.fixture
def jittery_batches(monkeypatch):
    """Each batch takes a random while to build (not from any seeded generator): worker threads finish out of
    order and prefetch to varying depths, as on a busy machine, where runs used to differ."""
    clock = random.SystemRandom()
    build_batch = BatchStream.batch

    def slow_batch(self, start, stop):
        time.sleep(clock.uniform(0, 0.03))
        return build_batch(self, start, stop)

    monkeypatch.setattr(BatchStream, "batch", slow_batch)


def test_same_config_and_seed_give_the_same_run_and_another_seed_does_not(tmp_path, jittery_batches):
    history, weights = train(tmp_path, 3)
    again_history, again_weights = train(tmp_path, 3)
    assert history["loss"] == again_history["loss"]  # every epoch's training loss, to the last bit
    assert history["val_balanced_accuracy"] == again_history["val_balanced_accuracy"]
    assert same(weights, again_weights)
    other_history, other_weights = train(tmp_path, 4)
    assert other_history["loss"] != history["loss"] and not same(weights, other_weights)


@pytest.mark.parametrize("averaging", ["ema", "swa"])
def test_averaged_weights_are_what_each_epoch_validates(tmp_path, averaging):
    plain, _ = train(tmp_path, 3)
    history, _ = train(tmp_path, 3, f"trainer.averaging.name={averaging}", "trainer.averaging.swa_epochs=2")
    assert len(history["val_loss"]) == 4 and np.isfinite(history["val_loss"]).all()
    if averaging == "ema":  # the optimiser's average from the first step on
        assert history["val_loss"][0] != plain["val_loss"][0]
    else:  # swa: fine-tuning only (epochs 3-4), from its second epoch, when the window holds two
        assert history["val_loss"][:3] == plain["val_loss"][:3] and history["val_loss"][3] != plain["val_loss"][3]
        # Training itself went on from the trained weights: the same steps, the same training loss.
        assert history["loss"] == plain["loss"]


def tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="logits")])
    model.compile(optimizer=keras.optimizers.SGD(0.5, use_ema=True, ema_momentum=0.5), loss="mse")
    return model


def test_ema_swaps_in_the_optimisers_average_and_puts_the_trained_weights_back():
    model = tiny_model()
    rng = np.random.default_rng(0)
    model.fit(rng.normal(size=(16, 4)), rng.normal(size=(16, 3)), batch_size=4, epochs=1, verbose=0)
    # fit() ends by writing the optimiser's average into the model; move the model's weights away from it.
    average = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    for v in model.trainable_variables:
        v.assign(v + 1.0)
    trained = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    ema = ExponentialAverage(0.5)
    assert ema.optimizer_options() == {"use_ema": True, "ema_momentum": 0.5}
    with ema.evaluated(model, "frozen"):
        inside = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    assert same(inside, average)
    assert same([keras.ops.convert_to_numpy(v) for v in model.trainable_variables], trained)


def test_swa_evaluates_the_mean_of_the_last_fine_tuning_epochs():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1, use_bias=False)])
    swa = WindowAverage(2)
    for phase, value in (("frozen", 9.0), ("finetune", 1.0), ("finetune", 2.0), ("finetune", 4.0)):
        model.trainable_variables[0].assign(np.full((2, 1), value))
        swa.after_epoch(model, phase)
        with swa.evaluated(model, phase):
            seen = float(keras.ops.convert_to_numpy(model.trainable_variables[0])[0, 0])
        assert float(keras.ops.convert_to_numpy(model.trainable_variables[0])[0, 0]) == value  # put back
    assert seen == 3.0  # the mean of the last two fine-tuning epochs (2 and 4), not the frozen phase's 9


def test_running_mean_restarts_per_phase():
    mean = RunningMean(3)
    assert [mean.add(v) for v in (0.3, 0.8, 0.3, 0.6)] == pytest.approx([0.3, 0.55, 0.4666667, 0.5666667])
    mean.reset()
    assert mean.add(0.9) == 0.9


def test_best_epoch_and_early_stopping_follow_the_smoothed_objective(tmp_path, monkeypatch):
    """One lucky epoch (0.80 in epoch 2) is not the checkpoint: the best 3-epoch mean ends at epoch 6."""
    curve = iter([0.30, 0.80, 0.30, 0.60, 0.62, 0.64, 0.20, 0.20, 0.20])
    monkeypatch.setattr(fit, "predict", lambda model, ds: np.full((2, 3), 1 / 3))
    monkeypatch.setattr(fit, "scores", lambda y, p: {"balanced_accuracy": next(curve)})
    model = tiny_model()
    best = fit._Best("maximize", tmp_path / "best.weights.h5")
    result = fit.FitResult()
    evaluator = fit._EpochEvaluator(
        None, None, "val_balanced_accuracy", best, 2, "finetune", lambda *_: None, result, None, RunningMean(3)
    )
    evaluator.set_model(model)
    for epoch in range(9):
        evaluator.on_epoch_end(epoch, {"loss": 1.0})
        if model.stop_training:
            break
    assert best.epoch == 6 and best.value == pytest.approx((0.60 + 0.62 + 0.64) / 3)
    assert epoch + 1 == 8  # two epochs without a better mean (patience 2), not stopped after epoch 4
    assert result.history["val_balanced_accuracy"][1] == 0.80  # the logged figures stay each epoch's own


def test_fine_tuning_is_not_stopped_by_its_dip_below_the_frozen_phase(tmp_path, monkeypatch):
    """Patience counts against the phase's own best: fine-tuning that starts below the frozen phase's best (the
    backbone just unfrozen) runs on while it climbs, and stops once it no longer improves on itself."""
    frozen_curve, finetune_curve = [0.30, 0.40, 0.42], [0.35, 0.33, 0.36, 0.41, 0.55, 0.60, 0.58, 0.57, 0.9]
    curve = iter(frozen_curve + finetune_curve)
    monkeypatch.setattr(fit, "predict", lambda model, ds: np.full((2, 3), 1 / 3))
    monkeypatch.setattr(fit, "scores", lambda y, p: {"balanced_accuracy": next(curve)})
    model = tiny_model()
    best = fit._Best("maximize", tmp_path / "best.weights.h5")
    result, smoothed = fit.FitResult(), RunningMean(1)
    epoch = 0
    for phase, epochs in (("frozen", len(frozen_curve)), ("finetune", len(finetune_curve))):
        evaluator = fit._EpochEvaluator(
            None, None, "val_balanced_accuracy", best, 2, phase, lambda *_: None, result, None, smoothed
        )
        evaluator.set_model(model)
        model.stop_training = False
        for _ in range(epochs):
            evaluator.on_epoch_end(epoch, {"loss": 1.0})
            epoch += 1
            if model.stop_training:
                break
    # the run's best (0.42) was not beaten until fine-tuning's 5th epoch; it stopped two epochs after its 0.60
    assert (best.epoch, best.value) == (9, 0.60)
    assert epoch == 11 and len(result.history["val_balanced_accuracy"]) == 11  # 0.9 never reached
