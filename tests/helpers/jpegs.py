"""JPEGs built in memory: photo-like ones, and the corrupt kinds an attacker or a failing disk produces (a scan cut
short, a scan zeroed, a tiny file claiming huge dimensions), which Pillow alone decodes without complaint."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def photo_jpeg(size=(200, 150), seed: int = 0, **save) -> bytes:
    """A photo-like JPEG (smooth gradients and noise, so its scan is a few kB)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], axis=-1)
    pixels = np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=85, **save)
    return buf.getvalue()


def scan_bounds(jpeg: bytes) -> tuple[int, int]:
    """Where the entropy-coded data of the (first) scan starts and where the end-of-image marker is."""
    sos = jpeg.index(b"\xff\xda")
    return sos + 2 + int.from_bytes(jpeg[sos + 2 : sos + 4], "big"), jpeg.rindex(b"\xff\xd9")


def cut_in_half(jpeg: bytes) -> bytes:
    """The first half of the scan, then an end-of-image marker: Pillow decodes it with the lower half grey."""
    start, end = scan_bounds(jpeg)
    return jpeg[: start + (end - start) // 2] + b"\xff\xd9"


def scan_zeroed(jpeg: bytes) -> bytes:
    """Everything after the first fifth of the scan overwritten with zero bytes, the length unchanged."""
    start, end = scan_bounds(jpeg)
    keep = start + (end - start) // 5
    return jpeg[:keep] + bytes(end - keep) + jpeg[end:]


def tiny_claiming(width: int, height: int) -> bytes:
    """A few-hundred-byte JPEG (an 8x8 image) whose frame header says width x height."""
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(buf, format="JPEG", quality=75)
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 7] = height.to_bytes(2, "big")
    data[sof + 7 : sof + 9] = width.to_bytes(2, "big")
    return bytes(data)
