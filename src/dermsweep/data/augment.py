"""Training-time augmentation from the `augment` config, applied per batch by the input pipeline, in NumPy and
OpenCV: the same on every Keras backend (TensorFlow, JAX, PyTorch), and no backend needed to run it.

Ranges mean what ImageDataGenerator's did: rotation in degrees either way, shifts and zoom as fractions.
Augmentation lives in the input pipeline, not in the model: the exported model never augments.

Flips, rotation, shifts and zoom are composed into ONE affine transform per image and applied in a single
bilinear resampling pass with the configured fill mode, as ImageDataGenerator did. Same ranges and distributions
as Keras' RandomFlip/Rotation/Translation/Zoom layers: each flip with probability 1/2, angle uniform in +-rotation,
shifts uniform in +-fraction of the size, zoom factor uniform in [1 - zoom, 1 + zoom] (aspect kept). Brightness and
contrast follow Keras' RandomBrightness/RandomContrast (value range 0-255): one delta, and one contrast factor
around each channel's mean, per image, then clipped.

The random parameters come from DRAWS uniforms per image that the caller passes (one row per image): the pipeline
derives them from (seed, pass, image index) without any random state (stream.uniforms), so an image is augmented
the same whichever worker thread, batch or backend serves it. The resampling
is OpenCV's warpAffine on the uint8 pixels: 11 ms per batch of 32 at 150x200 on one thread, where TensorFlow's
ImageProjectiveTransformV3 took 45 ms and chaining the four Keras layers resampled every image four times; it
releases the GIL, so worker threads run it in parallel.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Uniforms each image's augmentation reads, one column per random choice (see Augmenter.__call__).
DRAWS = 8
_HFLIP, _VFLIP, _ANGLE, _ZOOM, _SHIFT_X, _SHIFT_Y, _BRIGHTNESS, _CONTRAST = range(DRAWS)

BORDERS = {
    "nearest": cv2.BORDER_REPLICATE,
    "reflect": cv2.BORDER_REFLECT,
    "wrap": cv2.BORDER_WRAP,
    "constant": cv2.BORDER_CONSTANT,
}


class Augmenter:
    """augmenter(batch, draws) -> the augmented batch, for a batch (n, h, w, 3) of uint8 (or float32) pixels."""

    def __init__(self, cfg):
        # The pipeline already runs several batches at once; OpenCV's own threads on top would only fight over cores.
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
        self.brightness, self.contrast = min(1.0, k * float(cfg.brightness)), min(1.0, k * float(cfg.contrast))
        self.geometric = (
            self.hflip
            or self.vflip
            or self.rotation > 0
            or self.width_shift > 0
            or self.height_shift > 0
            or self.zoom > 0
        )
        self.photometric = self.brightness > 0 or self.contrast > 0

    @staticmethod
    def _symmetric(u: np.ndarray, bound: float) -> np.ndarray:
        """Uniform in [-bound, bound) from uniforms in [0, 1)."""
        return (2.0 * u - 1.0) * bound

    @staticmethod
    def _flip(u: np.ndarray, enabled: bool) -> np.ndarray:
        return np.where(u < 0.5, -1.0, 1.0) if enabled else np.ones(len(u))

    def matrices(self, h: int, w: int, draws: np.ndarray) -> np.ndarray:
        """(n, 2, 3) float32 affine maps from output pixel to input pixel, from each image's row of `draws`."""
        fx, fy = self._flip(draws[:, _HFLIP], self.hflip), self._flip(draws[:, _VFLIP], self.vflip)
        angle = self._symmetric(draws[:, _ANGLE], self.rotation)
        zoom = 1.0 + self._symmetric(draws[:, _ZOOM], self.zoom)
        tx = self._symmetric(draws[:, _SHIFT_X], self.width_shift) * w
        ty = self._symmetric(draws[:, _SHIFT_Y], self.height_shift) * h
        cos, sin = np.cos(angle) * zoom, np.sin(angle) * zoom
        # output pixel p -> input pixel A (p - c) + c - t, with A = zoom * R(angle) * diag(fx, fy)
        a0, a1, b0, b1 = cos * fx, -sin * fy, sin * fx, cos * fy
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        a2 = cx - a0 * cx - a1 * cy - tx
        b2 = cy - b0 * cx - b1 * cy - ty
        return np.stack([a0, a1, a2, b0, b1, b2], axis=1).reshape(-1, 2, 3).astype(np.float32)

    def warp(self, images: np.ndarray, matrices: np.ndarray) -> np.ndarray:
        out = np.empty_like(images)
        h, w = images.shape[1:3]
        flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP  # the matrices map output -> input, like TF's transforms
        for image, matrix, dst in zip(images, matrices, out, strict=True):
            cv2.warpAffine(image, matrix, (w, h), dst=dst, flags=flags, borderMode=self.border, borderValue=0)
        return out

    def _photometric(self, images: np.ndarray, draws: np.ndarray) -> np.ndarray:
        if self.brightness > 0:
            delta = (self._symmetric(draws[:, _BRIGHTNESS], self.brightness) * 255.0).astype(np.float32)
            images += delta[:, None, None, None]
            np.clip(images, 0.0, 255.0, out=images)
        if self.contrast > 0:
            factor = (1.0 + self._symmetric(draws[:, _CONTRAST], self.contrast)).astype(np.float32)
            mean = images.mean(axis=(1, 2), keepdims=True)
            images -= mean
            images *= factor[:, None, None, None]
            images += mean
            np.clip(images, 0.0, 255.0, out=images)
        return images

    def __call__(self, images: np.ndarray, draws: np.ndarray) -> np.ndarray:
        """A new batch from `images` and `draws`, (n, DRAWS) uniforms in [0, 1), one row per image: uint8 stays
        uint8 (pixels 0-255, which the model casts itself) unless brightness or contrast change it, which makes
        float32."""
        if draws.shape != (len(images), DRAWS):
            raise ValueError(f"augmentation needs draws of shape ({len(images)}, {DRAWS}), got {draws.shape}")
        if self.geometric:
            images = self.warp(images, self.matrices(images.shape[1], images.shape[2], draws))
        if not self.photometric:
            return images
        return self._photometric(images.astype(np.float32), draws)  # a copy: the caller's pixels are never changed


def build_augmenter(cfg) -> Augmenter | None:
    augmenter = Augmenter(cfg)
    if not augmenter.geometric and not augmenter.photometric:
        return None
    return augmenter
