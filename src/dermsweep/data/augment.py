"""Training-time augmentation from the `augment` config, applied per batch in the input pipeline.

Ranges mean what ImageDataGenerator's did: rotation in degrees either way, shifts and zoom as fractions.
Augmentation lives in the input pipeline, not in the model: the exported model never augments.

Flips, rotation, shifts and zoom are composed into ONE affine transform per image and applied in a single
bilinear resampling pass with the configured fill mode, as ImageDataGenerator did. Same ranges and distributions
as Keras' RandomFlip/Rotation/Translation/Zoom layers: each flip with probability 1/2, angle uniform in +-rotation,
shifts uniform in +-fraction of the size, zoom factor uniform in [1 - zoom, 1 + zoom] (aspect kept).

The random parameters are drawn by seeded TensorFlow ops; the resampling itself is OpenCV's warpAffine on the
uint8 pixels, called from the tf.data graph. On CPU, TensorFlow's ImageProjectiveTransformV3 cost 45 ms per batch
of 32 at 150x200 and shared the training step's thread pool; warpAffine costs 11 ms on one thread and releases the
GIL (bench/starvation.py). Chaining the four Keras layers resampled every image four times: ~4x slower again.
Brightness and contrast stay Keras layers, applied after the cast to float.
"""

from __future__ import annotations

import math

import cv2
import keras
import numpy as np
import tensorflow as tf

BORDERS = {
    "nearest": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT,
    "wrap": cv2.BORDER_WRAP,
    "constant": cv2.BORDER_CONSTANT,
}


class Augmenter:
    """Callable on a batch (n, h, w, 3), uint8 or float32: augmenter(batch, training=True) -> float32 batch."""

    def __init__(self, cfg, seed: int):
        # tf.data already runs several batches at once; OpenCV's own threads on top would only fight over the cores.
        cv2.setNumThreads(1)
        k = float(cfg.get("strength", 1.0))
        self.hflip, self.vflip = bool(cfg.horizontal_flip), bool(cfg.vertical_flip)
        self.rotation = math.radians(min(180.0, k * float(cfg.rotation)))
        self.width_shift, self.height_shift = (
            min(0.5, k * float(cfg.width_shift)),
            min(0.5, k * float(cfg.height_shift)),
        )
        self.zoom = min(0.9, k * float(cfg.zoom))
        self.border = BORDERS[str(cfg.fill_mode)]
        self.seed = seed
        self.geometric = (
            self.hflip
            or self.vflip
            or self.rotation > 0
            or self.width_shift > 0
            or self.height_shift > 0
            or self.zoom > 0
        )
        photometric = []
        brightness, contrast = min(1.0, k * float(cfg.brightness)), min(1.0, k * float(cfg.contrast))
        if brightness > 0:
            photometric.append(keras.layers.RandomBrightness(brightness, value_range=(0, 255), seed=seed + 4))
        if contrast > 0:
            photometric.append(keras.layers.RandomContrast(contrast, value_range=(0, 255), seed=seed + 5))
        self.photometric = photometric

    def _uniform(self, n, bound: float, offset: int):
        if bound <= 0:
            return tf.zeros((n,), tf.float32)
        return tf.random.uniform((n,), -bound, bound, seed=self.seed + offset)

    def _flip(self, n, enabled: bool, offset: int):
        if not enabled:
            return tf.ones((n,), tf.float32)
        return tf.where(tf.random.uniform((n,), seed=self.seed + offset) < 0.5, -1.0, 1.0)

    def matrices(self, n, h, w):
        """(n, 2, 3) affine maps from output pixel to input pixel, one random draw per image."""
        h, w = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
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
        return tf.reshape(tf.stack([a0, a1, a2, b0, b1, b2], axis=1), (-1, 2, 3))

    def _warp(self, images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        out = np.empty_like(images)
        h, w = images.shape[1:3]
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # the matrices map output -> input, like TF's transforms
        for image, matrix, dst in zip(images, matrices, out, strict=False):
            cv2.warpAffine(image, matrix, (w, h), dst=dst, flags=flags, borderMode=self.border, borderValue=0)
        return out

    def __call__(self, images, training: bool = True):
        if not training:
            return tf.cast(images, tf.float32)
        if self.geometric:
            shape = tf.shape(images)
            warped = tf.numpy_function(
                self._warp, [images, self.matrices(shape[0], shape[1], shape[2])], images.dtype, stateful=False
            )
            images = tf.ensure_shape(warped, images.shape)
        images = tf.cast(images, tf.float32)
        for layer in self.photometric:
            images = layer(images, training=True)
        return images


def build_augmenter(cfg, seed: int) -> Augmenter | None:
    augmenter = Augmenter(cfg, seed)
    if not augmenter.geometric and not augmenter.photometric:
        return None
    return augmenter
