"""Grad-CAM (Selvaraju et al. 2017) for the classifier: which regions pushed the top class up.

The Keras model nests its MobileNet as a layer named `backbone` (training.model); the map is taken on the backbone's
last convolutional activation (training.backbones names it for each backbone, else the last 4-D layer). Models
without a backbone layer (tiny test models) use their own last 4-D layer.
"""

from __future__ import annotations

import base64
import io

import numpy as np

from ..training.backbones import BACKBONES
from ..training.model import BACKBONE_LAYER

LAST_CONV = tuple(BACKBONES.get(name).last_conv for name in BACKBONES.names())


def _last_4d(model) -> str:
    for layer in reversed(model.layers):
        shape = getattr(layer, "output", None)
        shape = getattr(shape, "shape", None)
        if shape is not None and len(shape) == 4 and not layer.__class__.__name__.endswith("InputLayer"):
            return layer.name
    raise ValueError(f"model {model.name} has no 4-D (convolutional) layer for Grad-CAM")


class GradCAM:
    def __init__(self, model):
        import keras

        self.model = model
        # A shipped model wraps its classifier(s) in test-time views and calibration: the map is the first
        # classifier's on the image as given; the probabilities stay the shipped model's.
        nested = [
            layer
            for layer in model.layers
            if isinstance(layer, keras.Model) and BACKBONE_LAYER in [inner.name for inner in layer.layers]
        ]
        self.shipped = bool(nested) and BACKBONE_LAYER not in [layer.name for layer in model.layers]
        classifier = nested[0] if self.shipped else model
        names = [layer.name for layer in classifier.layers]
        if BACKBONE_LAYER in names:
            self.backbone = classifier.get_layer(BACKBONE_LAYER)
            inner = [layer.name for layer in self.backbone.layers]
            self.layer = next((n for n in LAST_CONV if n in inner), None) or _last_4d(self.backbone)
            self.inner = keras.Model(
                self.backbone.inputs, [self.backbone.get_layer(self.layer).output, self.backbone.output]
            )
            i = names.index(BACKBONE_LAYER)
            self.before = list(classifier.layers[1:i])
            self.after = classifier.layers[i + 1 :]
        else:
            self.backbone = None
            self.layer = _last_4d(classifier)
            self.inner = keras.Model(classifier.inputs, [classifier.get_layer(self.layer).output, classifier.output])

    def __call__(self, x: np.ndarray, class_index: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """x: (1, H, W, 3) float32 0-255 -> (heat-map (h, w) in [0, 1] on the conv grid, probabilities (k,))."""
        import tensorflow as tf

        x = tf.constant(np.asarray(x, np.float32))
        with tf.GradientTape() as tape:
            if self.backbone is not None:
                y = x
                for layer in self.before:
                    y = layer(y)
                conv, feats = self.inner(y, training=False)
                tape.watch(conv)
                z = feats
                for layer in self.after:
                    z = layer(z, training=False)
            else:
                conv, z = self.inner(x, training=False)
                tape.watch(conv)
            probs = z
            if class_index is None and self.shipped:  # the class the shipped model predicts
                class_index = int(np.argmax(self.model(x, training=False)[0]))
            k = int(np.argmax(probs[0])) if class_index is None else int(class_index)
            score = probs[:, k]
        grads = tape.gradient(score, conv)
        if self.shipped:
            probs = self.model(x, training=False)
        if grads is None:
            raise ValueError(f"no gradient from the output to layer {self.layer}")
        weights = tf.reduce_mean(grads, axis=(1, 2))  # (1, C)
        cam = tf.nn.relu(tf.reduce_sum(conv * weights[:, None, None, :], axis=-1))[0].numpy()
        top = float(cam.max())
        cam = cam / top if top > 0 else np.zeros_like(cam)
        return cam.astype(np.float32), np.asarray(probs[0], np.float64)


COLOURS = "jet"  # the overlay's colour map (low = blue, high = red); the page's legend shows the same colours


def colour_scale(stops: int = 9) -> list[str]:
    """The overlay's colours from 0 (no contribution) to 1 (the most), as CSS hex colours: the page's legend."""
    from matplotlib import colormaps

    rgb = colormaps[COLOURS](np.linspace(0.0, 1.0, stops))[:, :3]
    return ["#" + "".join(f"{round(c * 255):02x}" for c in row) for row in rgb]


def overlay_png(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45, min_side: int = 256) -> bytes:
    """The heat-map (jet colours) blended over the model-input image, upscaled for display. PNG bytes."""
    from matplotlib import colormaps
    from PIL import Image

    h, w = image.shape[:2]
    scale = max(1, int(np.ceil(min_side / min(h, w))))
    size = (w * scale, h * scale)
    base = Image.fromarray(image.astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    heat = Image.fromarray((cam * 255).astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    colored = (colormaps[COLOURS](np.asarray(heat) / 255.0)[..., :3] * 255).astype(np.uint8)
    blended = Image.blend(base, Image.fromarray(colored), alpha)
    buf = io.BytesIO()
    blended.save(buf, format="PNG")
    return buf.getvalue()


def data_url(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode()
