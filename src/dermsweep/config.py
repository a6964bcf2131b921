"""The configuration's rules in one place. `validate(cfg)` runs before any data is read or any run is created,
and names the offending key, the value, and what would be valid.

Hydra already rejects unknown keys (struct mode) and unknown group options; this checks values and combinations.
"""
from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from .errors import ConfigError
from .evaluate import METRICS

DATA_SOURCES = ("ham10000", "folder", "synthetic")
BACKBONE_NAMES = ("mobilenet_v1", "mobilenet_v2")
# Widths with published ImageNet weights (keras.applications refuses others).
IMAGENET_ALPHAS = {
    "mobilenet_v1": (0.25, 0.5, 0.75, 1.0),
    "mobilenet_v2": (0.35, 0.5, 0.75, 1.0, 1.3, 1.4),
}
AUGMENT_FILL = ("nearest", "reflect", "wrap", "constant")
SCHEDULES = ("constant", "plateau", "cosine", "exponential")
CLASS_WEIGHTS = ("none", "balanced", "sqrt", "effective")
OPTIMIZERS = ("adam", "adamw", "sgd")
DIRECTIONS = ("maximize", "minimize")
SWITCHES = ("auto", True, False, "true", "false")
# Objectives: any validation metric, plus model cost for multi-objective sweeps.
OBJECTIVES = tuple(f"val_{m}" for m in METRICS) + ("params", "latency_ms")


def _fail(key: str, value, why: str) -> None:
    raise ConfigError(f"{key}={value!r}: {why}")


def _number(cfg, key: str, lo: float, hi: float, *, lo_open=False, hi_open=False, integer=False):
    node, _, leaf = key.rpartition(".")
    value = cfg
    for part in key.split("."):
        value = value.get(part) if isinstance(value, DictConfig) else None
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        _fail(key, value, f"must be {'an integer' if integer else 'a number'}")
    if not math.isfinite(value):
        _fail(key, value, "must be finite")
    below = value <= lo if lo_open else value < lo
    above = value >= hi if hi_open else value > hi
    if below or above:
        lb, rb = ("(" if lo_open else "["), (")" if hi_open else "]")
        hi_s = "inf" if hi == math.inf else f"{hi:g}"
        _fail(key, value, f"must be in {lb}{lo:g}, {hi_s}{rb}")
    return value


def _one_of(key: str, value, allowed) -> None:
    if value not in allowed:
        _fail(key, value, f"unknown; choose one of {', '.join(map(str, allowed))}")


def objectives(cfg) -> list[tuple[str, str]]:
    """[(metric, direction)]: one pair, or several for a multi-objective sweep."""
    metrics, directions = cfg.objective.metric, cfg.objective.direction
    metrics = list(metrics) if isinstance(metrics, ListConfig | list) else [metrics]
    directions = list(directions) if isinstance(directions, ListConfig | list) else [directions]
    if len(directions) != len(metrics):
        _fail("objective.direction", directions, f"needs one direction per objective.metric ({len(metrics)})")
    return list(zip(metrics, directions))


LOG_MODEL_MODES = ("always", "improving", "never")


def log_model_mode(cfg) -> str:
    """tracking.log_model as one of LOG_MODEL_MODES (true and false mean always and never)."""
    value = cfg.tracking.log_model
    if isinstance(value, bool):
        return "always" if value else "never"
    _one_of("tracking.log_model", value, LOG_MODEL_MODES)
    return str(value)


def validate(cfg: DictConfig) -> None:
    _data(cfg)
    _model(cfg)
    _augment(cfg)
    _schedule(cfg)
    _class_weight(cfg)
    _trainer(cfg)
    for metric, direction in objectives(cfg):
        _one_of("objective.metric", metric, OBJECTIVES)
        _one_of("objective.direction", direction, DIRECTIONS)
    if not objectives(cfg)[0][0].startswith("val_"):
        _fail("objective.metric", cfg.objective.metric, "the first objective must be a validation metric (val_...)")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        _fail("seed", cfg.seed, "must be a non-negative integer")
    if not cfg.experiment or not str(cfg.experiment).strip():
        _fail("experiment", cfg.experiment, "must be a non-empty name")
    if not str(cfg.tracking.uri or "").strip():
        _fail("tracking.uri", cfg.tracking.uri, "must be a tracking URI such as sqlite:///mlruns/mlflow.db")
    log_model_mode(cfg)
    for key in ("mixed_precision", "multi_gpu"):
        _one_of(f"hardware.{key}", cfg.hardware[key], SWITCHES)


def _data(cfg) -> None:
    d = cfg.data
    _one_of("data.source", d.source, DATA_SOURCES)
    if d.source in ("ham10000", "folder") and (d.root is None or not str(d.root).strip()):
        _fail("data.root", d.root, "must point at the dataset folder")
    if d.source == "synthetic":
        _number(cfg, "data.num_images", 20, math.inf, integer=True)
        _number(cfg, "data.majority_share", 0, 1, lo_open=True, hi_open=True)
        _number(cfg, "data.images_per_lesion", 1, math.inf, integer=True)
    if d.max_images is not None:
        _number(cfg, "data.max_images", 20, math.inf, integer=True)
    if not isinstance(d.strict, bool):
        _fail("data.strict", d.strict, "must be true or false")
    _number(cfg, "data.split.val_fraction", 0, 0.5, lo_open=True, hi_open=True)
    _number(cfg, "data.split.test_fraction", 0, 0.5, lo_open=True, hi_open=True)
    if d.split.val_fraction + d.split.test_fraction >= 0.8:
        _fail("data.split", f"val {d.split.val_fraction} + test {d.split.test_fraction}",
              "leaves less than 20% for training; lower the fractions")
    if d.split.seed is not None:
        _number(cfg, "data.split.seed", 0, math.inf, integer=True)


def _model(cfg) -> None:
    m = cfg.model
    _one_of("model.name", m.name, BACKBONE_NAMES)
    alpha = _number(cfg, "model.alpha", 0, 2, lo_open=True)
    _number(cfg, "model.height", 32, 1024, integer=True)
    _number(cfg, "model.width", 32, 1024, integer=True)
    _number(cfg, "model.dropout", 0, 0.9)
    _number(cfg, "model.frozen_fraction", 0, 1)
    weights = m.weights
    if weights == "imagenet":
        if alpha not in IMAGENET_ALPHAS[m.name]:
            _fail("model.alpha", alpha, f"{m.name} has ImageNet weights only for widths "
                  f"{', '.join(map(str, IMAGENET_ALPHAS[m.name]))}; pick one, or set model.weights=null")
    elif weights is not None:
        path = Path(str(weights)).expanduser()
        if not path.is_file():
            _fail("model.weights", weights, "no such file; use imagenet, null, or the path of a Keras weights file "
                  "without top (e.g. ../shared/weights/mobilenet_v1_0.25_224_no_top.weights.h5)")
        if not path.name.endswith(".h5"):
            _fail("model.weights", weights, "expected a Keras weights file (*.weights.h5)")


def _augment(cfg) -> None:
    _number(cfg, "augment.rotation", 0, 180)
    _number(cfg, "augment.width_shift", 0, 0.5)
    _number(cfg, "augment.height_shift", 0, 0.5)
    _number(cfg, "augment.zoom", 0, 0.9)
    _number(cfg, "augment.brightness", 0, 1)
    _number(cfg, "augment.contrast", 0, 1)
    _one_of("augment.fill_mode", cfg.augment.fill_mode, AUGMENT_FILL)
    for key in ("horizontal_flip", "vertical_flip"):
        if not isinstance(cfg.augment[key], bool):
            _fail(f"augment.{key}", cfg.augment[key], "must be true or false")


def _schedule(cfg) -> None:
    s = cfg.schedule
    _one_of("schedule.name", s.name, SCHEDULES)
    if s.name == "plateau":
        _number(cfg, "schedule.factor", 0, 1, lo_open=True, hi_open=True)
        _number(cfg, "schedule.patience", 1, math.inf, integer=True)
        _number(cfg, "schedule.min_lr", 0, math.inf)
    elif s.name == "cosine":
        _number(cfg, "schedule.warmup_fraction", 0, 0.5)
        _number(cfg, "schedule.alpha", 0, 1)
    elif s.name == "exponential":
        _number(cfg, "schedule.decay_rate", 0, 1, lo_open=True)


def _class_weight(cfg) -> None:
    _one_of("class_weight.name", cfg.class_weight.name, CLASS_WEIGHTS)
    if cfg.class_weight.name == "effective":
        _number(cfg, "class_weight.beta", 0, 1, hi_open=True)


def _trainer(cfg) -> None:
    t = cfg.trainer
    _number(cfg, "trainer.batch_size", 1, 4096, integer=True)
    for phase in ("frozen", "finetune"):
        _number(cfg, f"trainer.{phase}.epochs", 0, 10_000, integer=True)
        _number(cfg, f"trainer.{phase}.lr", 0, 10, lo_open=True)
    if t.frozen.epochs + t.finetune.epochs == 0:
        _fail("trainer.frozen.epochs", 0, "both phases have 0 epochs: nothing would be trained")
    _one_of("trainer.optimizer", t.optimizer, OPTIMIZERS)
    _number(cfg, "trainer.weight_decay", 0, 1)
    _number(cfg, "trainer.label_smoothing", 0, 0.5, hi_open=True)
    if t.early_stopping_patience is not None:
        _number(cfg, "trainer.early_stopping_patience", 1, math.inf, integer=True)
    if t.steps_per_epoch is not None:
        _number(cfg, "trainer.steps_per_epoch", 1, math.inf, integer=True)
