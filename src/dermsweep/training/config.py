"""The configuration's rules. `validate(cfg)` runs before any data is read or any run is created, and names the
offending key, the value, and what would be valid.

Hydra already rejects unknown keys (struct mode) and unknown group options. The names an option group allows,
and the checks of each option's own keys, come from the registries next to the code (data.sources.SOURCES,
backbones.BACKBONES, schedules.SCHEDULES, class_weights.CLASS_WEIGHTS, optimizers.OPTIMIZERS); this module holds
the rules for the keys every run has.
"""

from __future__ import annotations

import math
from pathlib import Path

from omegaconf import DictConfig, ListConfig

from ..checks import boolean, fail, number, one_of, select
from ..data.augment import BORDERS
from ..data.sources import SOURCES
from ..errors import ConfigError
from ..evaluation.metrics import METRICS
from ..keras_backend import BACKENDS
from ..objectives import DIRECTIONS
from ..views import VIEW_SETS
from .averaging import AVERAGING
from .backbones import BACKBONES
from .class_weights import CLASS_WEIGHTS
from .optimizers import OPTIMIZERS
from .schedules import SCHEDULES

SWITCHES = ("auto", True, False, "true", "false")
# Objectives: any validation metric, plus model cost for multi-objective sweeps.
OBJECTIVES = tuple(f"val_{m}" for m in METRICS) + ("params", "latency_ms")
LOG_MODEL_MODES = ("always", "improving", "never")
MIXED_DTYPES = ("auto", "bfloat16", "float16")


def objectives(cfg) -> list[tuple[str, str]]:
    """[(metric, direction)]: one pair, or several for a multi-objective sweep."""
    metrics, directions = cfg.objective.metric, cfg.objective.direction
    metrics = list(metrics) if isinstance(metrics, ListConfig | list) else [metrics]
    directions = list(directions) if isinstance(directions, ListConfig | list) else [directions]
    if len(directions) != len(metrics):
        fail("objective.direction", directions, f"needs one direction per objective.metric ({len(metrics)})")
    return list(zip(metrics, directions, strict=True))


def log_model_mode(cfg) -> str:
    """tracking.log_model as one of LOG_MODEL_MODES (true and false mean always and never)."""
    value = cfg.tracking.log_model
    if isinstance(value, bool):
        return "always" if value else "never"
    one_of("tracking.log_model", value, LOG_MODEL_MODES)
    return str(value)


def validate(cfg: DictConfig) -> None:
    for registry in (SOURCES, BACKBONES, SCHEDULES, CLASS_WEIGHTS, OPTIMIZERS, AVERAGING):
        registry.validate(cfg)
    _data(cfg)
    _model(cfg)
    _augment(cfg)
    _trainer(cfg)
    for metric, direction in objectives(cfg):
        one_of("objective.metric", metric, OBJECTIVES)
        one_of("objective.direction", direction, DIRECTIONS)
    if not objectives(cfg)[0][0].startswith("val_"):
        fail("objective.metric", cfg.objective.metric, "the first objective must be a validation metric (val_...)")
    if not isinstance(cfg.seed, int) or isinstance(cfg.seed, bool) or cfg.seed < 0:
        fail("seed", cfg.seed, "must be a non-negative integer")
    if not cfg.experiment or not str(cfg.experiment).strip():
        fail("experiment", cfg.experiment, "must be a non-empty name")
    if not str(cfg.tracking.uri or "").strip():
        fail("tracking.uri", cfg.tracking.uri, "must be a tracking URI such as sqlite:///mlruns/mlflow.db")
    log_model_mode(cfg)
    _inference(cfg)
    _hardware(cfg)
    _distill(cfg)


def _hardware(cfg) -> None:
    hw = cfg.hardware
    one_of("hardware.backend", hw.backend, BACKENDS)
    for key in ("mixed_precision", "multi_gpu"):
        one_of(f"hardware.{key}", hw[key], SWITCHES)
    one_of("hardware.mixed_dtype", hw.mixed_dtype, MIXED_DTYPES)
    if hw.data_workers != "auto":
        _in(cfg, "hardware.data_workers", 1, 256, integer=True)


def _in(cfg, key: str, lo: float, hi: float, **kwargs) -> float:
    return number(key, select(cfg, key), lo, hi, **kwargs)


def _data(cfg) -> None:
    d = cfg.data
    if d.max_images is not None:
        _in(cfg, "data.max_images", 20, math.inf, integer=True)
    boolean("data.strict", d.strict)
    _in(cfg, "data.split.val_fraction", 0, 0.5, lo_open=True, hi_open=True)
    _in(cfg, "data.split.test_fraction", 0, 0.5, lo_open=True, hi_open=True)
    if d.split.val_fraction + d.split.test_fraction >= 0.8:
        fail(
            "data.split",
            f"val {d.split.val_fraction} + test {d.split.test_fraction}",
            "leaves less than 20% for training; lower the fractions",
        )
    if d.split.seed is not None:
        _in(cfg, "data.split.seed", 0, math.inf, integer=True)
    folds = d.split.get("folds")
    if folds is not None:
        _in(cfg, "data.split.folds", 2, 20, integer=True)
    if d.split.get("fold") is not None:
        if folds is None:
            fail(
                "data.split.fold", d.split.fold, "needs data.split.folds (the number of folds), e.g. data.split.folds=5"
            )
        _in(cfg, "data.split.fold", 0, int(folds) - 1, integer=True)
    _in(cfg, "retry_weak_folds", 0, 5, integer=True)
    if cfg.get("resume") is not None and (folds is None or d.split.get("fold") is not None):
        fail(
            "resume",
            cfg.resume,
            "continues a stopped cross-validation: give the same data.split.folds it ran with and no data.split.fold",
        )


def _model(cfg) -> None:
    m = cfg.model
    _in(cfg, "model.height", 32, 1024, integer=True)
    _in(cfg, "model.width", 32, 1024, integer=True)
    _in(cfg, "model.dropout", 0, 0.9)
    _in(cfg, "model.frozen_fraction", 0, 1)
    boolean("model.train_batchnorm", m.train_batchnorm)
    power = m.get("shades_of_gray")
    if power not in (None, 0):  # 0 (or null) = off; else number()'s rule, with the off value in the message
        try:
            _in(cfg, "model.shades_of_gray", 1, 32)
        except ConfigError:
            fail(
                "model.shades_of_gray",
                power,
                "0 = off, else the Shades of Gray power in [1, 32] (6: the ISIC winners')",
            )
    weights = m.weights
    if weights == "imagenet":
        BACKBONES.get(m.name).check_imagenet(m)
    elif weights is not None:
        path = Path(str(weights)).expanduser()
        if not path.is_file():
            fail(
                "model.weights",
                weights,
                f"no such file ({path.name}); the presets read it from paths.weights_dir "
                f"(now {cfg.paths.get('weights_dir')}): point paths.weights_dir at the folder holding {path.name}, "
                "or set model.weights=imagenet (downloads; needs internet), null (random init) or the path of a "
                "Keras weights file without top",
            )
        if not path.name.endswith(".h5"):
            fail("model.weights", weights, "expected a Keras weights file (*.weights.h5)")


def _augment(cfg) -> None:
    _in(cfg, "augment.rotation", 0, 180)
    _in(cfg, "augment.width_shift", 0, 0.5)
    _in(cfg, "augment.height_shift", 0, 0.5)
    _in(cfg, "augment.zoom", 0, 0.9)
    _in(cfg, "augment.brightness", 0, 1)
    _in(cfg, "augment.contrast", 0, 1)
    _in(cfg, "augment.strength", 0, 3)
    one_of("augment.fill_mode", cfg.augment.fill_mode, BORDERS)
    for key in ("horizontal_flip", "vertical_flip"):
        boolean(f"augment.{key}", cfg.augment[key])


def _inference(cfg) -> None:
    one_of("inference.views", cfg.inference.views, ("auto", *VIEW_SETS))
    boolean("inference.calibrate", cfg.inference.calibrate)
    boolean("inference.prior_adjustment", cfg.inference.prior_adjustment)
    number("inference.gain_confidence", cfg.inference.get("gain_confidence", 0.9), 0, 1)
    point = cfg.inference.operating_point
    if point is not None:
        if not isinstance(point.get("class_name"), str) or not point.class_name:
            fail("inference.operating_point.class_name", point.get("class_name"), "must name a class, e.g. mel")
        _in(cfg, "inference.operating_point.sensitivity", 0, 1, lo_open=True)


def _trainer(cfg) -> None:
    t = cfg.trainer
    _in(cfg, "trainer.batch_size", 1, 4096, integer=True)
    for phase in ("frozen", "finetune"):
        _in(cfg, f"trainer.{phase}.epochs", 0, 10_000, integer=True)
        _in(cfg, f"trainer.{phase}.lr", 0, 10, lo_open=True)
    if t.frozen.epochs + t.finetune.epochs == 0:
        fail("trainer.frozen.epochs", 0, "both phases have 0 epochs: nothing would be trained")
    _in(cfg, "trainer.weight_decay", 0, 1)
    _in(cfg, "trainer.label_smoothing", 0, 0.5, hi_open=True)
    if t.early_stopping_patience is not None:
        _in(cfg, "trainer.early_stopping_patience", 1, math.inf, integer=True)
    if t.steps_per_epoch is not None:
        _in(cfg, "trainer.steps_per_epoch", 1, math.inf, integer=True)
    _in(cfg, "trainer.objective_smoothing", 1, 1000, integer=True)
    boolean("trainer.deterministic", t.deterministic)
    boolean("trainer.run_eagerly", t.run_eagerly)


def _distill(cfg) -> None:
    d = cfg.get("distill")
    if d is None:
        return
    teacher = d.get("teacher")
    if teacher is not None and (not isinstance(teacher, str) or not teacher.strip()):
        fail(
            "distill.teacher",
            teacher,
            "must be a model reference (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, a run id or a "
            ".keras file) or null",
        )
    one_of("distill.teacher_output", d.get("teacher_output"), ("raw", "shipped", "out_of_fold"))
    _in(cfg, "distill.temperature", 0, 100, lo_open=True)
    _in(cfg, "distill.weight", 0, 1)


def split_seed(cfg) -> int:
    """The data split's seed: data.split.seed where set, else the run's seed."""
    return int(cfg.data.split.seed if cfg.data.split.get("seed") is not None else cfg.seed)
