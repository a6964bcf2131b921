"""Decode and resize every image of a table once, in parallel, and keep the result.

Two caches: the process cache (dermsweep.cache: a sweep's trials reuse it at no cost) and on disk as .npy, keyed by
the dataset's identity, the image ids and the input size, so trials launched in other processes (parallel launchers)
and later runs skip decoding too. Bad images are found here, before any training or tracking starts.
"""

from __future__ import annotations

import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..cache import ProcessCache
from .catalog import Catalog, digest
from .images import BadImage

log = logging.getLogger(__name__)
CACHE_VERSION = 3  # bump when decoding or resizing changes (2: EXIF orientation, alpha, 16-bit; 3: strict JPEG)


@dataclass
class Decoded:
    pixels: np.ndarray  # (n, h, w, 3) uint8, rows in table order, bad rows removed
    table: pd.DataFrame  # the rows that decoded
    bad: list[str]  # "image_id: reason" for rows that did not


_PIXELS: ProcessCache[Decoded] = ProcessCache("decoded pixels")


def decode(catalog: Catalog, table: pd.DataFrame, height: int, width: int, cache_dir: str | None) -> Decoded:
    key = digest(CACHE_VERSION, catalog.dataset_id, list(table["image_id"]), height, width)
    on_disk = bool(cache_dir) and catalog.source != "synthetic"  # generated images are cheaper to re-render

    def build() -> Decoded:
        decoded = _from_disk(str(cache_dir), key, table) if on_disk else None
        if decoded is None:
            decoded = _decode_all(catalog, table, height, width)
            if on_disk:
                _to_disk(str(cache_dir), key, decoded)
        return decoded

    return _PIXELS.get(key, build)


def _decode_all(catalog: Catalog, table: pd.DataFrame, height: int, width: int) -> Decoded:
    out = np.empty((len(table), height, width, 3), dtype=np.uint8)
    ok = np.zeros(len(table), dtype=bool)
    bad: list[str] = []

    def one(i: int) -> str | None:
        row = table.iloc[i]
        try:
            out[i] = catalog.read(row, height, width)
            ok[i] = True
            return None
        except BadImage as exc:
            return f"{row['image_id']}: {exc}"

    workers = min(8, (os.cpu_count() or 2) * 2)
    with ThreadPoolExecutor(workers) as pool:
        bad = [r for r in pool.map(one, range(len(table))) if r is not None]
    if bad:
        log.warning("%d unusable image(s), e.g. %s", len(bad), bad[0])
    return Decoded(out[ok] if not ok.all() else out, table[ok].reset_index(drop=True), bad)


def _paths(cache_dir: str, key: str) -> tuple[Path, Path]:
    root = Path(cache_dir) / "pixels"
    return root / f"{key}.npy", root / f"{key}.json"


def _from_disk(cache_dir: str, key: str, table: pd.DataFrame) -> Decoded | None:
    npy, meta = _paths(cache_dir, key)
    if not (npy.is_file() and meta.is_file()):
        return None
    try:
        info = json.loads(meta.read_text())
        pixels = np.load(npy, mmap_mode="r")
        keep = table["image_id"].isin(set(info["ok_ids"]))
        if pixels.shape[0] != int(keep.sum()):
            return None
        return Decoded(np.asarray(pixels), table[keep].reset_index(drop=True), info["bad"])
    except (OSError, ValueError, KeyError) as exc:  # a broken cache is rebuilt, never trusted
        log.warning("ignoring unreadable pixel cache %s (%s)", npy, exc)
        return None


def _to_disk(cache_dir: str, key: str, decoded: Decoded) -> None:
    npy, meta = _paths(cache_dir, key)
    try:
        npy.parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: a concurrent reader never sees half a file.
        tmp = npy.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, decoded.pixels)
        os.replace(tmp, npy)
        tmp_meta = meta.with_suffix(f".{os.getpid()}.tmp")
        tmp_meta.write_text(json.dumps({"ok_ids": list(decoded.table["image_id"]), "bad": decoded.bad}))
        os.replace(tmp_meta, meta)
    except OSError as exc:
        log.warning("could not write pixel cache under %s (%s); continuing without it", cache_dir, exc)
