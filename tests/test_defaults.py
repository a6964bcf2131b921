"""What a plain `train.py` composes (the shipped recipe), its clear error without the weights file, the small
configs tests and the demo keep, and the checks of the new trainer keys (determinism, averaging, smoothing)."""

from __future__ import annotations

import pytest

from dermsweep.errors import ConfigError
from dermsweep.training import config
from helpers.config import compose


def test_plain_config_is_the_shipped_recipe():
    cfg = compose(["data.root=/data/ham10000"])
    m = cfg.model
    assert (m.name, m.alpha, m.height, m.width, m.frozen_fraction) == ("mobilenet_v1", 0.75, 150, 200, 0.0)
    assert m.weights == f"{cfg.paths.weights_dir}/mobilenet_v1_0.75_224_no_top.weights.h5"
    assert cfg.trainer.deterministic is True and cfg.trainer.averaging.name == "none"


def test_missing_weights_file_is_one_clear_error_naming_it_and_paths_weights_dir(tmp_path):
    cfg = compose([f"paths.weights_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"mobilenet_v1_0\.75_224_no_top\.weights\.h5.*paths\.weights_dir"):
        config.validate(cfg)


def test_imagenet_download_is_a_valid_choice_for_the_recipe():
    config.validate(compose(["model.weights=imagenet"]))  # alpha 0.75 has ImageNet weights


def test_smoke_trainer_leaves_the_model_alone():
    """trainer=smoke sets the trainer only (issue 23's trap); tests ask for a small network themselves."""
    recipe, smoke = compose(["data=synthetic"]).model, compose(["data=synthetic", "trainer=smoke"]).model
    assert smoke == recipe


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["trainer.averaging.name=mean"], "trainer.averaging.name"),
        (["trainer.averaging.name=ema", "trainer.averaging.ema_momentum=1.0"], "trainer.averaging.ema_momentum"),
        (["trainer.averaging.name=swa", "trainer.averaging.swa_epochs=0"], "trainer.averaging.swa_epochs"),
        (["trainer.objective_smoothing=0"], "trainer.objective_smoothing"),
        (["trainer.deterministic=maybe"], "trainer.deterministic"),
    ],
)
def test_new_trainer_keys_are_checked(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config.validate(compose(["data=synthetic", "trainer=smoke", "model=mobilenet_v1", *overrides]))
