"""Training-time augmentation from the `augment` config, applied per batch in the input pipeline.

Ranges mean what ImageDataGenerator's did: rotation in degrees either way, shifts and zoom as fractions.
The layers live in the input pipeline, not in the model: the exported model never augments.

Flips, rotation, shifts and zoom are composed into ONE affine transform per image and applied in a single
resampling pass (tf.raw_ops.ImageProjectiveTransformV3, bilinear, the configured fill mode), as ImageDataGenerator
did. Chaining Keras' RandomFlip/RandomRotation/RandomTranslation/RandomZoom layers resampled every image four
times: about 4x slower on CPU (bench/pipeline.py) and blurrier. Same ranges and distributions as those layers:
each flip with probability 1/2, angle uniform in +-rotation, shifts uniform in +-fraction of the size, zoom factor
uniform in [1 - zoom, 1 + zoom] (aspect kept). Brightness and contrast stay Keras layers, after the transform.
"""
from __future__ import annotations

import math

import keras
import tensorflow as tf


class Augmenter:
    """Callable on a float32 batch (n, h, w, 3): augmenter(batch, training=True) -> augmented batch."""

    def __init__(self, cfg, seed: int):
        self.hflip, self.vflip = bool(cfg.horizontal_flip), bool(cfg.vertical_flip)
        self.rotation = math.radians(float(cfg.rotation))
        self.width_shift, self.height_shift = float(cfg.width_shift), float(cfg.height_shift)
        self.zoom = float(cfg.zoom)
        self.fill_mode = str(cfg.fill_mode).upper()
        self.seed = seed
        self.geometric = (self.hflip or self.vflip or self.rotation > 0 or self.width_shift > 0
                          or self.height_shift > 0 or self.zoom > 0)
        photometric = []
        if cfg.brightness > 0:
            photometric.append(keras.layers.RandomBrightness(cfg.brightness, value_range=(0, 255), seed=seed + 4))
        if cfg.contrast > 0:
            photometric.append(keras.layers.RandomContrast(cfg.contrast, value_range=(0, 255), seed=seed + 5))
        self.photometric = photometric

    def _uniform(self, n, bound: float, offset: int):
        if bound <= 0:
            return tf.zeros((n,), tf.float32)
        return tf.random.uniform((n,), -bound, bound, seed=self.seed + offset)

    def _flip(self, n, enabled: bool, offset: int):
        if not enabled:
            return tf.ones((n,), tf.float32)
        return tf.where(tf.random.uniform((n,), seed=self.seed + offset) < 0.5, -1.0, 1.0)

    def _transform(self, images):
        shape = tf.shape(images)
        n = shape[0]
        h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        fx, fy = self._flip(n, self.hflip, 0), self._flip(n, self.vflip, 10)
        angle = self._uniform(n, self.rotation, 1)
        zoom = 1.0 + self._uniform(n, self.zoom, 3)
        tx, ty = self._uniform(n, self.width_shift, 2) * w, self._uniform(n, self.height_shift, 12) * h
        cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
        # output pixel p -> input pixel A (p - c) + c - t, with A = zoom * R(angle) * diag(fx, fy)
        a0, a1, b0, b1 = cos * fx, -sin * fy, sin * fx, cos * fy
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        a2 = cx - a0 * cx - a1 * cy - tx
        b2 = cy - b0 * cx - b1 * cy - ty
        zeros = tf.zeros_like(a0)
        matrix = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=matrix, output_shape=shape[1:3], fill_value=0.0,
            interpolation="BILINEAR", fill_mode=self.fill_mode,
        )

    def __call__(self, images, training: bool = True):
        if not training:
            return images
        if self.geometric:
            images = self._transform(images)
        for layer in self.photometric:
            images = layer(images, training=True)
        return images


def build_augmenter(cfg, seed: int) -> Augmenter | None:
    augmenter = Augmenter(cfg, seed)
    if not augmenter.geometric and not augmenter.photometric:
        return None
    return augmenter
