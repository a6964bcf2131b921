"""Config composition: every option of every group composes and validates; bad values fail naming the key."""

from __future__ import annotations

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from dermsweep.errors import ConfigError
from dermsweep.training.config import validate
from helpers.config import CONF, WEIGHTS, compose

GROUPS = ["data", "model", "resolution", "augment", "schedule", "class_weight", "trainer"]


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group,option", [(g, o) for g in GROUPS for o in options(g)])
def test_every_option_composes_and_validates(group, option):
    extra = ["data.root=/some/folder"] if (group, option) in (("data", "folder"), ("data", "isic2018")) else []
    cfg = compose([f"{group}={option}", *extra])
    validate(cfg)
    if group == "trainer":
        assert cfg.trainer.batch_size >= 1
    elif group == "data":
        assert cfg.data.source == option
    elif group == "model":  # presets (mobilenet_v1_a025...) name the backbone they configure
        assert option.startswith(cfg.model.name)
    elif group == "resolution":
        assert f"{cfg.model.height}x{cfg.model.width}" == option
    else:
        assert cfg[group].name == option


def test_every_group_has_the_options_the_brief_names():
    assert set(options("data")) >= {"ham10000", "folder", "synthetic"}
    assert set(options("model")) >= {"mobilenet_v1", "mobilenet_v2"}
    assert set(options("augment")) == {"none", "light", "strong"}
    assert set(options("schedule")) == {"constant", "plateau", "cosine", "exponential"}
    assert set(options("class_weight")) >= {"none", "balanced", "sqrt"}
    assert set(options("trainer")) == {"default", "smoke"}


def test_each_option_yaml_has_its_code_and_each_registered_option_a_yaml():
    """One owner per option: the registry next to the code lists the names, conf/<group>/ documents each one."""
    from dermsweep.data.sources import SOURCES
    from dermsweep.training.backbones import BACKBONES
    from dermsweep.training.class_weights import CLASS_WEIGHTS
    from dermsweep.training.schedules import SCHEDULES

    for group, registry, key in (
        ("schedule", SCHEDULES, "name"),
        ("class_weight", CLASS_WEIGHTS, "name"),
        ("data", SOURCES, "source"),
        ("model", BACKBONES, "name"),
    ):
        named = {OmegaConf.load(CONF / group / f"{o}.yaml").get(key) for o in options(group)} - {None}
        assert named == set(registry.names()), group


def test_defaults_and_overrides():
    cfg = compose()
    assert cfg.model.name == "mobilenet_v1" and cfg.data.source == "ham10000"
    assert cfg.objective.metric == "val_balanced_accuracy" and cfg.objective.direction == "maximize"
    assert cfg.tracking.uri.startswith("sqlite:///") or cfg.tracking.uri  # MLFLOW_TRACKING_URI may override
    cfg = compose(
        [
            "model=mobilenet_v1",
            "model.alpha=0.75",
            "model.height=128",
            "model.width=96",
            "augment=strong",
            "trainer.finetune.lr=3e-5",
            "seed=7",
        ]
    )
    validate(cfg)
    assert (cfg.model.name, cfg.model.alpha, cfg.model.height, cfg.model.width) == ("mobilenet_v1", 0.75, 128, 96)
    assert cfg.augment.zoom == 0.25 and cfg.trainer.finetune.lr == 3e-5 and cfg.seed == 7


def test_light_augmentation_is_the_classic_recipe():
    a = compose(["augment=light"]).augment
    assert (a.rotation, a.width_shift, a.height_shift, a.zoom) == (180, 0.1, 0.1, 0.1)
    assert a.horizontal_flip and a.vertical_flip and a.fill_mode == "nearest"


def test_smoke_trainer_is_tiny_and_sets_only_the_trainer():
    plain = compose(["data=ham10000", "model=mobilenet_v1_a075", "resolution=150x200"])
    cfg = compose(["data=ham10000", "model=mobilenet_v1_a075", "resolution=150x200", "trainer=smoke"])
    assert cfg.trainer.frozen.epochs == 1 and cfg.trainer.finetune.epochs == 1 and cfg.trainer.steps_per_epoch <= 8
    # `make train ARGS='trainer=smoke'` keeps the recipe's input size and data (it trained at 64x64 on 140 images)
    assert (cfg.model.height, cfg.model.width) == (plain.model.height, plain.model.width) == (150, 200)
    assert cfg.model == plain.model and cfg.data == plain.data
    tiny = compose(["data=synthetic", "trainer=smoke", "resolution=64x64"])
    assert (tiny.model.height, tiny.model.width) == (64, 64)


def test_local_weights_file_validates():
    path = WEIGHTS / "mobilenet_v1_0.25_224_no_top.weights.h5"
    if not path.exists():
        pytest.skip("shared weights not present")
    validate(compose(["model=mobilenet_v1", "model.alpha=0.25", f"model.weights={path}"]))


BAD = [
    (["model.alpha=0.3", "model.weights=imagenet"], "model.alpha"),
    (["model=mobilenet_v1", "model.alpha=0.35", "model.weights=imagenet"], "model.alpha"),
    (["model.alpha=-1"], "model.alpha"),
    (["model.height=16"], "model.height"),
    (["model.width=12.5"], "model.width"),
    (["model.frozen_fraction=1.5"], "model.frozen_fraction"),
    (["model.dropout=0.95"], "model.dropout"),
    (["model.weights=/no/such/file.weights.h5"], "model.weights"),
    (["trainer.frozen.lr=0"], "trainer.frozen.lr"),
    (["trainer.finetune.lr=-1e-4"], "trainer.finetune.lr"),
    (["trainer.batch_size=0"], "trainer.batch_size"),
    (["trainer.frozen.epochs=0", "trainer.finetune.epochs=0"], "trainer.frozen.epochs"),
    (["trainer.optimizer=rmsprop"], "trainer.optimizer"),
    (["trainer.label_smoothing=0.7"], "trainer.label_smoothing"),
    (["augment.rotation=270"], "augment.rotation"),
    (["augment.zoom=-0.1"], "augment.zoom"),
    (["augment.fill_mode=mirror"], "augment.fill_mode"),
    (["schedule=plateau", "schedule.factor=1.5"], "schedule.factor"),
    (["schedule=exponential", "schedule.decay_rate=0"], "schedule.decay_rate"),
    (["class_weight=effective", "class_weight.beta=1.0"], "class_weight.beta"),
    (["class_weight.name=inverse"], "class_weight.name"),
    (["objective.metric=val_recall"], "objective.metric"),
    (["objective.direction=up"], "objective.direction"),
    (["data.split.val_fraction=0.6"], "data.split.val_fraction"),
    (["data.split.val_fraction=0.45", "data.split.test_fraction=0.45"], "data.split"),
    (["data.max_images=3"], "data.max_images"),
    (["data=synthetic", "data.num_images=5"], "data.num_images"),
    (["hardware.mixed_precision=maybe"], "hardware.mixed_precision"),
    (["hardware.backend=mxnet"], "hardware.backend"),
    (["hardware.mixed_dtype=float8"], "hardware.mixed_dtype"),
    (["hardware.data_workers=0"], "hardware.data_workers"),
    (["seed=-3"], "seed"),
    (["tracking.log_model=sometimes"], "tracking.log_model"),
]


@pytest.mark.parametrize(
    "value,mode",
    [("true", "always"), ("false", "never"), ("improving", "improving"), ("always", "always"), ("never", "never")],
)
def test_log_model_modes(value, mode):
    from dermsweep.training.config import log_model_mode

    cfg = compose([f"tracking.log_model={value}"])
    validate(cfg)
    assert log_model_mode(cfg) == mode


@pytest.mark.parametrize("overrides,key", BAD, ids=[k for _, k in BAD])
def test_invalid_values_fail_naming_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        validate(compose(overrides))
    assert str(err.value).startswith(f"{key}="), str(err.value)


@pytest.mark.parametrize("override", ["model=resnet50", "model.depth=3", "augment=extreme", "trainer.epochs=3"])
def test_unknown_options_and_keys_are_rejected_by_composition(override):
    with pytest.raises((ConfigCompositionException, ConfigAttributeError, ConfigKeyError)):
        compose([override])
