"""The classifier's fine-tuning depth: which layers train, and what BatchNorm does while they do."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

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
