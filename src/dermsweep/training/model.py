"""The classifier: a MobileNet backbone with a new head, taking raw RGB pixels and scaling them itself (after
colour constancy, where model.shades_of_gray asks for it).

Input: float32 RGB 0-255, shape (None, any height, any width, 3): a run trains it at model.height x model.width.
Output: softmax probabilities (float32 even under mixed precision), from a `logits` layer the shipped model reuses.
What a run logs is the shipped model around it (training/ship.py), with the input size fixed.
"""

from __future__ import annotations

from pathlib import Path

import keras

from ..cache import ProcessCache
from ..errors import ConfigError
from ..keras_layers import ShadesOfGray
from .backbones import BACKBONES

BACKBONE_LAYER = "backbone"
CLASSIFIER = "classifier"
LOGITS_LAYER = "logits"
# Pretrained backbone weights read in this process, by (backbone, its arguments, source): a sweep builds a fresh
# model per trial, and reading the HDF5 file again cost ~0.5 s of the trial's start; assigning them from memory ~0.06 s.
_WEIGHTS: ProcessCache[list] = ProcessCache("backbone weights")


def build(model_cfg, num_classes: int) -> keras.Model:
    spec = BACKBONES.get(model_cfg.name)
    # Any input size: the run trains at model.height x model.width, and the shipped model also feeds it quarter-
    # turned views (height and width swapped) for test-time augmentation (training/ship.py).
    shape = (None, None, 3)
    weights = model_cfg.weights
    backbone = _backbone(model_cfg, shape, weights)
    if weights is None:
        # Random init: nothing to protect, so the whole network trains from the first phase, and BatchNorm
        # statistics (initialised to mean 0, variance 1) settle within a few dozen steps instead of hundreds.
        for layer in backbone.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = 0.9
    else:
        backbone.trainable = False

    inputs = keras.Input(shape, name="image", dtype="float32")
    x = inputs
    power = model_cfg.get("shades_of_gray") or 0  # .get: configs of runs logged before the option have no such key
    if power:
        x = ShadesOfGray(float(power), name="colour_constancy")(x)
    # The backbone's own input scaling (MobileNets: [-1, 1], as keras.applications.mobilenet*.preprocess_input):
    # baked in, so the model is self-contained.
    x = keras.layers.Rescaling(spec.scale, offset=spec.offset, name="preprocess")(x)
    # Pretrained: BatchNorm stays in inference mode, also while fine-tuning (set_finetune_depth keeps those layers
    # frozen): updating its statistics on a small dataset wrecks the pretrained features. Random init has no
    # statistics worth keeping: its BatchNorm must learn them, or activations collapse to a constant.
    x = backbone(x, training=False) if weights is not None else backbone(x)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(float(model_cfg.dropout), name="dropout")(x)
    logits = keras.layers.Dense(num_classes, dtype="float32", name=LOGITS_LAYER)(x)
    outputs = keras.layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name=CLASSIFIER)


def logits_of(classifier: keras.Model) -> keras.Model:
    """The classifier without its softmax (same layers, same weights): what test-time views average and the
    shipped model calibrates. A model that already ends in the logits layer is returned as it is."""
    if classifier.layers[-1].name == LOGITS_LAYER:
        return classifier
    return keras.Model(classifier.inputs, classifier.get_layer(LOGITS_LAYER).output, name=f"{classifier.name}_logits")


def logits_inside(shipped: keras.Model) -> list[keras.Model]:
    """The logits models a shipped model wraps (one per member), found by their last layer."""
    return [
        layer
        for layer in shipped.layers
        if isinstance(layer, keras.Model) and layer.layers and layer.layers[-1].name == LOGITS_LAYER
    ]


def _backbone(model_cfg, shape, weights) -> keras.Model:
    name = str(model_cfg.name)
    spec = BACKBONES.get(name)
    arguments = spec.arguments(model_cfg)
    described = ", ".join(f"{k}={v}" for k, v in arguments.items())
    key = (name, tuple(sorted(arguments.items())), weights, *_file_stamp(weights))
    known = _WEIGHTS.peek(key) if weights is not None else None
    if known is not None:
        net = spec.build(input_shape=shape, include_top=False, weights=None, **arguments)
        net.set_weights(known)  # conv weights do not depend on the input size
        net.name = BACKBONE_LAYER
        return net
    try:
        net = spec.build(input_shape=shape, include_top=False, weights=weights, **arguments)
    except Exception as exc:  # keras raises ValueError, OSError, URL errors... translate the common ones
        if weights == "imagenet":
            raise ConfigError(
                f"model.weights=imagenet: could not load ImageNet weights for {name} {described} ({exc}). "
                "Without internet, point model.weights at a local Keras weights file without top "
                "(e.g. ../shared/weights/mobilenet_v1_0.25_224_no_top.weights.h5) or use model.weights=null."
            ) from exc
        if weights is not None:
            raise ConfigError(
                f"model.weights={weights!r}: this file does not fit {name} {described} ({exc}). "
                "Use the weights file made for this backbone and width, or model.weights=null."
            ) from exc
        raise ConfigError(f"model: cannot build {name} {described}: {exc}") from exc
    if weights is not None:
        _WEIGHTS.get(key, net.get_weights)  # one backbone's weights at a time: bounded memory
    net.name = BACKBONE_LAYER
    return net


def _file_stamp(weights) -> tuple:
    """Size and mtime of a weights file, so an edited file is read again; () for null or 'imagenet'."""
    if weights is None or weights == "imagenet":
        return ()
    try:
        stat = Path(str(weights)).stat()
        return stat.st_size, stat.st_mtime_ns
    except OSError:
        return ()


def backbone_of(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE_LAYER)


def set_finetune_depth(model: keras.Model, frozen_fraction: float, train_batchnorm: bool = False) -> int:
    """Unfreeze the backbone above the first `frozen_fraction` of its layers. Returns how many stay frozen.

    BatchNormalization layers stay frozen unless `train_batchnorm`. In Keras 3 the `training=False` given to the
    nested backbone does not hold once the backbone is trainable: its BatchNorm layers then normalise with the
    batch's statistics and overwrite ImageNet's moving averages (tests/test_model.py shows both). A frozen
    BatchNorm layer always runs in inference mode, the Keras transfer-learning rule; `train_batchnorm` lets them
    adapt to dermoscopy instead (model.train_batchnorm: measured, not assumed).
    """
    backbone = backbone_of(model)
    backbone.trainable = True
    layers = backbone.layers
    n_frozen = round(frozen_fraction * len(layers))
    for i, layer in enumerate(layers):
        is_batchnorm = isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = i >= n_frozen and (train_batchnorm or not is_batchnorm)
    return n_frozen


def weights_label(weights) -> str:
    """How the backbone was initialised, for tracking: imagenet, random, or the weights file's name."""
    if weights is None:
        return "random"
    if weights == "imagenet":
        return "imagenet"
    return f"file:{Path(str(weights)).name}"
