"""Decode and resize one image exactly as training does. Predict, export, serve and the web app call the same function.

Why PIL and not tf.image: decoding happens once per image (then cached), PIL releases the GIL so a thread pool
decodes in parallel, and consumers (pyfunc server, CLI) get identical pixels without TensorFlow.

Every image comes from a person or a request, so it is treated as hostile. The rules, the same at every door
(training, `dermsweep predict`, `export --data-dir`, the REST model, the web server and, reproduced in app.js, the
browser):

- only regular files are read (not FIFOs, devices, folders), at most MAX_BYTES of them;
- width x height is checked against MAX_PIXELS as soon as the header is read, before any pixel is decoded
  (Pillow's own decompression-bomb errors are reported the same way: a bad image, not a crash);
- decoding is strict: a file whose data ends early or is corrupt is refused with the decoder's reason, never padded.
  Pillow refuses truncated PNG, GIF, TIFF, BMP and WebP itself (with ImageFile.LOAD_TRUNCATED_IMAGES off, which is
  checked), but its JPEG decoder turns libjpeg's warnings into silence: a scan cut short and closed with an
  end-of-image marker comes back with grey rows. So every JPEG is first decoded by libjpeg-turbo through simplejpeg
  with warnings as errors (strict=True), at 1/8 scale in greyscale: every entropy-coded byte is still checked, at a
  small cost (a 24-megapixel photo: ~0.4 s; a 633-byte file claiming 6000x6000: ~20 ms, no large buffer). Pillow
  then decodes the pixels as before, so the pixels themselves are unchanged;
- EXIF orientation is applied (a photo is classified the way it is displayed, as browsers show it);
- transparent pixels are composited over white (what a person sees on a page; the browser does the same);
- 16-bit greyscale keeps its high byte (as Pillow does for 16-bit colour PNGs), float images must be 0-1 (scaled to
  0-255) and 32-bit integer images 0-65535; anything else is refused with the reason.

This file travels with the serving model (code path): it imports nothing from dermsweep.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

# Bilinear with antialiasing (PIL's reduce-aware resampling): the one resize used everywhere.
RESAMPLE = Image.Resampling.BILINEAR
MAX_PIXELS = 40_000_000  # width * height: a 24-megapixel phone photo or a 30-megapixel dermoscope image fits
MAX_BYTES = 50 * 1024 * 1024  # a file or payload larger than this is refused before it is read
# EXIF orientation tag -> the transpose that shows the image upright (the EXIF 2.3 table, as ImageOps uses it)
ORIENTATION = 0x0112
UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
JPEG_FORMATS = ("JPEG", "MPO")  # MPO: a phone's multi-picture JPEG (its first picture is used)


class BadImage(ValueError):
    """An image file that cannot be used, with the reason (zero-byte, truncated, not an image, too large...)."""


def load_rgb(source: str | Path | bytes, height: int, width: int) -> np.ndarray:
    """Return the image as uint8 RGB of shape (height, width, 3). Raises BadImage with a readable reason."""
    rgb = decode_rgb(source)
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), RESAMPLE)
    return np.asarray(rgb, dtype=np.uint8)


def decode_rgb(source: str | Path | bytes) -> Image.Image:
    """The image at its own size, upright, as 8-bit RGB (the rules above). Raises BadImage."""
    name = "<bytes>" if isinstance(source, bytes | bytearray) else str(source)
    data = bytes(source) if isinstance(source, bytes | bytearray) else read_file(source)
    if not data:
        raise BadImage(f"{name}: empty file (0 bytes)")
    if len(data) > MAX_BYTES:
        raise BadImage(f"{name}: file too large ({len(data) / 1e6:.1f} MB; the limit is {MAX_BYTES / 1e6:.0f} MB)")
    try:
        img = Image.open(io.BytesIO(data))  # reads the header only
        _check_size(name, *img.size)
        _check_complete(name, img.format, data)
        img.load()  # forces a full decode: truncated files fail here, not later in training
        turn = UPRIGHT.get(_orientation(img))
        rgb = _to_rgb(name, img)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise BadImage(f"{name}: image too large (over Pillow's decompression-bomb limit: {exc})") from exc
    except UnidentifiedImageError as exc:
        raise BadImage(f"{name}: not an image (unrecognised format)") from exc
    except MemoryError:
        raise
    except Exception as exc:  # a hostile file can make a decoder raise anything: it is a bad image, not a crash
        raise BadImage(f"{name}: corrupt or truncated image ({type(exc).__name__}: {exc})") from exc
    return rgb.transpose(turn) if turn is not None else rgb


def _check_size(name: str, width: int, height: int) -> None:
    """Refuse an image whose pixel count is over MAX_PIXELS (or zero). Raises BadImage."""
    if width <= 0 or height <= 0:
        raise BadImage(f"{name}: image has no pixels ({width}x{height})")
    if width * height > MAX_PIXELS:
        raise BadImage(
            f"{name}: image too large ({width}x{height} = {width * height / 1e6:.0f} megapixels; the limit is "
            f"{MAX_PIXELS / 1e6:.0f} megapixels): resize it and try again"
        )


def _check_complete(name: str, image_format: str | None, data: bytes) -> None:
    """Refuse a file whose compressed data is cut short or corrupt (see the module's rules). Raises BadImage."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:  # another library turned it on for the whole process
        raise BadImage(
            f"{name}: not checked: PIL.ImageFile.LOAD_TRUNCATED_IMAGES is on in this process, so truncated images "
            "would be padded; turn it off"
        )
    if image_format not in JPEG_FORMATS:
        return
    try:
        import simplejpeg
    except ImportError as exc:  # fail closed: a JPEG that cannot be checked is not used
        raise BadImage(
            f"{name}: cannot check this JPEG: the simplejpeg package is missing (pip install simplejpeg)"
        ) from exc
    try:
        simplejpeg.decode_jpeg(data, colorspace="GRAY", min_height=1, min_width=1, strict=True)
    except ValueError as exc:
        raise BadImage(f"{name}: corrupt or truncated JPEG ({exc})") from exc


def read_file(path: str | Path) -> bytes:
    """The bytes of a regular file of at most MAX_BYTES. FIFOs, devices and folders are refused without reading."""
    name = str(path)
    try:
        # stat first: opening a device can have effects; O_NONBLOCK: opening a FIFO must not wait for a writer
        _regular(name, os.stat(path).st_mode)
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            _regular(name, info.st_mode)  # replaced between stat and open
            if info.st_size > MAX_BYTES:
                raise BadImage(
                    f"{name}: file too large ({info.st_size / 1e6:.1f} MB; the limit is {MAX_BYTES / 1e6:.0f} MB)"
                )
            return fh.read(MAX_BYTES + 1)  # a file that grows while read is caught by decode_rgb's size check
    except BadImage:
        raise
    except OSError as exc:
        raise BadImage(f"{name}: cannot read file ({exc.strerror or exc})") from exc
    except ValueError as exc:  # an embedded NUL byte
        raise BadImage(f"{name!r}: not a usable file name ({exc})") from exc


def _regular(name: str, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        kind = "a folder"
    elif stat.S_ISFIFO(mode):
        kind = "a named pipe"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        kind = "a device"
    else:
        kind = "a socket or other special file"
    raise BadImage(f"{name}: not a regular file ({kind}); give the path of an image file")


def _orientation(img: Image.Image) -> int:
    """The EXIF orientation tag, 1 (as stored) when absent or unreadable (a broken EXIF block is not applied)."""
    try:
        value = img.getexif().get(ORIENTATION, 1)
        return int(value) if isinstance(value, int) else 1
    except Exception:
        return 1


def _to_rgb(name: str, img: Image.Image) -> Image.Image:
    """8-bit RGB by the module's rules (16-bit, float, 32-bit integer, alpha). Raises BadImage."""
    mode = img.mode
    if mode in SIXTEEN_BIT or mode == "I":
        levels = np.asarray(img)
        if mode == "I" and (levels.min() < 0 or levels.max() > 65535):
            raise BadImage(
                f"{name}: 32-bit integer image with values {levels.min()}..{levels.max()} (expected 0-65535): "
                "save it as an 8-bit or 16-bit image"
            )
        grey = (levels.astype(np.uint32) >> 8).astype(np.uint8)  # the high byte: 65535 -> 255, 32768 -> 128
        return Image.fromarray(grey, "L").convert("RGB")
    if mode == "F":
        values = np.asarray(img, dtype=np.float32)
        if not np.isfinite(values).all():
            raise BadImage(f"{name}: floating-point image with NaN or infinite values: save it as an 8-bit image")
        lo, hi = float(values.min()), float(values.max())
        if lo < 0.0 or hi > 1.0:
            raise BadImage(
                f"{name}: floating-point image with values {lo:.4g}..{hi:.4g}; float images must be 0-1 "
                "(save it as an 8-bit image)"
            )
        return Image.fromarray(np.round(values * 255.0).astype(np.uint8), "L").convert("RGB")
    if any(band in ("A", "a") for band in img.getbands()) or "transparency" in img.info:
        return _over_white(img.convert("RGBA"))
    return img if mode == "RGB" else img.convert("RGB")


def _over_white(rgba: Image.Image) -> Image.Image:
    """Composite over white as a browser canvas does: round(c * a / 255) + (255 - a), row blocks to bound memory."""
    src = np.asarray(rgba)
    out = np.empty(src.shape[:2] + (3,), dtype=np.uint8)
    for top in range(0, src.shape[0], 512):
        block = src[top : top + 512].astype(np.uint32)
        alpha = block[..., 3:4]
        out[top : top + 512] = (block[..., :3] * alpha + 127) // 255 + (255 - alpha)
    return Image.fromarray(out, "RGB")
