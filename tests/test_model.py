"""The classifier's fine-tuning depth: which layers train, and what BatchNorm does while they do."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from dermsweep.training.backbones import BACKBONES
from dermsweep.training.model import backbone_of, build, set_finetune_depth


def _model(weights):
    cfg = OmegaConf.create(
        {
            "name": "mobilenet_v1",
            "alpha": 0.25,
            "height": 64,
            "width": 64,
            "weights": weights,
            "dropout": 0.0,
            "frozen_fraction": 0.0,
        }
    )
    return build(cfg, 7)


def _moving_means(model):
    return [
        keras.ops.convert_to_numpy(layer.moving_mean).copy()
        for layer in backbone_of(model).layers
        if isinstance(layer, keras.layers.BatchNormalization)
    ]


@pytest.fixture(scope="module")
def pretrained_weights(repo):
    path = repo.parent / "shared" / "weights" / "mobilenet_v1_0.25_224_no_top.weights.h5"
    if not path.is_file():
        pytest.skip(f"pretrained weights not found at {path}")
    return str(path)


@pytest.mark.parametrize("train_batchnorm", [False, True])
def test_batchnorm_while_fine_tuning(pretrained_weights, train_batchnorm):
    """Keras 3 ignores the nested training=False once the backbone is trainable: frozen BatchNorm layers are what
    keeps ImageNet's statistics (the default); train_batchnorm=true lets them normalise per batch and update."""
    model = _model(pretrained_weights)
    x = np.random.default_rng(0).uniform(0, 255, (8, 64, 64, 3)).astype("float32")
    frozen = set_finetune_depth(model, 0.5, train_batchnorm=train_batchnorm)
    layers = backbone_of(model).layers
    assert frozen == round(0.5 * len(layers)) and not any(layer.trainable for layer in layers[:frozen])
    assert all(layer.trainable for layer in layers[frozen:] if not isinstance(layer, keras.layers.BatchNormalization))
    before = _moving_means(model)
    gap = float(np.abs(model(x, training=True) - model(x, training=False)).max())
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy")
    model.fit(x, np.eye(7)[np.arange(8) % 7], epochs=1, verbose=0)
    moved = max(float(np.abs(a - b).max()) for a, b in zip(before, _moving_means(model), strict=True))
    if train_batchnorm:
        assert gap > 1e-3 and moved > 0
    else:
        assert gap == 0.0 and moved == 0.0


@pytest.mark.parametrize("name", BACKBONES.names())
def test_every_registered_backbone_builds_from_its_own_entry(name):
    """A backbone's entry is all the code needs: its YAML composes, and the network builds, scales its input and
    has the last convolution Grad-CAM reads, with a run-name label and metadata from the entry alone."""
    from dermsweep.training import config
    from helpers.config import compose

    cfg = compose([f"model={name}", "model.weights=null", "model.height=32", "model.width=32", "data=synthetic"])
    config.validate(cfg)
    spec = BACKBONES.get(name)
    model = build(cfg.model, 7)
    probs = keras.ops.convert_to_numpy(model(np.full((1, 32, 32, 3), 255.0, np.float32)))
    assert probs.shape == (1, 7) and np.isclose(probs.sum(), 1.0, atol=1e-5)
    rescale = model.get_layer("preprocess")
    assert (rescale.scale, rescale.offset) == (spec.scale, spec.offset)
    assert backbone_of(model).get_layer(spec.last_conv) is not None
    assert spec.label(cfg.model) and spec.describe(cfg.model)["backbone"] == name
