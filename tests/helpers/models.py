"""A tiny untrained Keras classifier laid out like training.model.build's, and random images to feed it."""

from __future__ import annotations

import keras
import numpy as np

from dermsweep.training.model import CLASSIFIER, LOGITS_LAYER
from helpers.predictions import K


def tiny_classifier(seed: int = 0) -> keras.Model:
    """A classifier laid out like training.model.build's (any input size, logits then softmax), untrained."""
    keras.utils.set_random_seed(seed)
    x = inputs = keras.Input((None, None, 3))
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    x = keras.layers.Conv2D(6, 3, strides=2, activation="relu")(x)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    logits = keras.layers.Dense(K, name=LOGITS_LAYER)(x)
    return keras.Model(inputs, keras.layers.Activation("softmax", name="probabilities")(logits), name=CLASSIFIER)


def images(n: int = 5, h: int = 12, w: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3)).astype(np.uint8)
