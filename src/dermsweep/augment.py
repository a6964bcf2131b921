"""Training-time augmentation from the `augment` config, as Keras preprocessing layers applied per batch.

Ranges mean what ImageDataGenerator's did: rotation in degrees either way, shifts and zoom as fractions.
The layers live in the input pipeline, not in the model: the exported model never augments.
"""
from __future__ import annotations

import keras


def build_augmenter(cfg, seed: int) -> keras.Sequential | None:
    layers = []
    fill = cfg.fill_mode
    flips = {(True, True): "horizontal_and_vertical", (True, False): "horizontal", (False, True): "vertical"}
    mode = flips.get((bool(cfg.horizontal_flip), bool(cfg.vertical_flip)))
    if mode:
        layers.append(keras.layers.RandomFlip(mode, seed=seed))
    if cfg.rotation > 0:
        layers.append(keras.layers.RandomRotation(cfg.rotation / 360.0, fill_mode=fill, seed=seed + 1))
    if cfg.width_shift > 0 or cfg.height_shift > 0:
        layers.append(
            keras.layers.RandomTranslation(cfg.height_shift, cfg.width_shift, fill_mode=fill, seed=seed + 2)
        )
    if cfg.zoom > 0:
        layers.append(keras.layers.RandomZoom((-cfg.zoom, cfg.zoom), fill_mode=fill, seed=seed + 3))
    if cfg.brightness > 0:
        layers.append(keras.layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 4))
    if cfg.contrast > 0:
        layers.append(keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 5))
    if not layers:
        return None
    return keras.Sequential(layers, name="augment")
