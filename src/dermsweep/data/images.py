"""Decode and resize one image exactly as training does. Predict, export and serve call the same function.

Why PIL and not tf.image: decoding happens once per image (then cached), PIL releases the GIL so a thread pool
decodes in parallel, and consumers (pyfunc server, CLI) get identical pixels without TensorFlow.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

# Bilinear with antialiasing (PIL's reduce-aware resampling): the one resize used everywhere.
RESAMPLE = Image.Resampling.BILINEAR


class BadImage(ValueError):
    """An image file that cannot be used, with the reason (zero-byte, truncated, not an image...)."""


def load_rgb(source: str | Path | bytes, height: int, width: int) -> np.ndarray:
    """Return the image as uint8 RGB of shape (height, width, 3). Raises BadImage with a readable reason."""
    name = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
    try:
        data = bytes(source) if isinstance(source, bytes | bytearray) else Path(source).read_bytes()
    except OSError as exc:
        raise BadImage(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    if not data:
        raise BadImage(f"{name}: empty file (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()  # forces a full decode: truncated files fail here, not later in training
            rgb = img.convert("RGB")
    except UnidentifiedImageError as exc:
        raise BadImage(f"{name}: not an image (unrecognised format)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise BadImage(f"{name}: corrupt or truncated image ({exc})") from exc
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), RESAMPLE)
    return np.asarray(rgb, dtype=np.uint8)
