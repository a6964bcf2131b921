"""The shipped model's outputs are float32 under mixed precision (a bfloat16 softmax's rows sum to ~0.996)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from dermsweep.training.gains import Gains, wrap


@pytest.fixture
def mixed_bfloat16():
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)


def test_shipped_model_computes_probabilities_in_float32_under_mixed_precision(mixed_bfloat16):
    inputs = keras.Input((None, None, 3))
    x = keras.layers.GlobalAveragePooling2D()(inputs)
    logits = keras.layers.Dense(7, name="logits")(x)
    classifier = keras.Model(inputs, keras.layers.Activation("softmax", dtype="float32")(logits))
    gains = Gains(views="dihedral", temperature=1.7, bias=[0.1, -0.2, 0.0, 0.3, -0.1, 0.2, 0.0])
    shipped = wrap([classifier], 8, 6, gains)
    probs = shipped(np.random.default_rng(0).uniform(0, 255, (4, 8, 6, 3)).astype(np.float32))
    assert keras.backend.standardize_dtype(probs.dtype) == "float32"
    assert np.allclose(keras.ops.convert_to_numpy(probs).sum(axis=1), 1.0, atol=1e-6)
