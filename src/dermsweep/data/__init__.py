"""Data: sources (one file each), the lesion-grouped split, decoding with caches, and the tf.data pipeline.

`prepare(cfg)` is the one call the task makes: index the source, take the subset, decode (finding bad files),
split. It raises DataError before any training or tracking when the data cannot be used.
"""
from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import DataError
from . import folder, ham10000, synthetic
from .catalog import Catalog, digest
from .pixels import decode
from .split import Split, split, subset

log = logging.getLogger(__name__)
SOURCES = {"ham10000": ham10000.load, "folder": folder.load, "synthetic": synthetic.load}
_SUBSETS: dict[str, list[str]] = {}  # subset key -> image ids in subset order (one entry, like the pixel cache)


@dataclass
class Prepared:
    catalog: Catalog
    split: Split
    class_names: list[str]
    x: dict[str, np.ndarray]       # "train" / "val" / "test" -> uint8 (n, h, w, 3)
    y: dict[str, np.ndarray]       # class indices
    problems: list[str]            # every skipped row or file with its reason

    @property
    def dataset_id(self) -> str:
        return self.catalog.dataset_id


def prepare(data_cfg, height: int, width: int, seed: int, cache_dir: str | None) -> Prepared:
    catalog = SOURCES[data_cfg.source](data_cfg)
    table = _subset(catalog, data_cfg.max_images, seed, cache_dir)
    decoded = decode(catalog, table, height, width, cache_dir)
    problems = list(catalog.problems) + list(decoded.bad)
    if problems and data_cfg.strict:
        listing = "\n  ".join(problems[:50]) + ("\n  ..." if len(problems) > 50 else "")
        raise DataError(
            f"{len(problems)} problem(s) in the data and data.strict=true, so nothing was trained:\n  {listing}\n"
            "Fix or remove these files, or set data.strict=false to skip them (they are then logged to MLflow)."
        )
    present = sorted(set(decoded.table["label"]))
    absent = [c for c in catalog.class_names if c not in present]
    if absent:
        log.warning("classes with no usable image: %s", ", ".join(absent))
    try:
        parts = split(decoded.table, data_cfg.split.val_fraction, data_cfg.split.test_fraction, seed)
    except ValueError as exc:
        raise DataError(f"cannot split {len(decoded.table)} images: {exc}; use more images (data.max_images)") from exc
    row_of = {image_id: i for i, image_id in enumerate(decoded.table["image_id"])}
    x, y = {}, {}
    for name in ("train", "val", "test"):
        part = getattr(parts, name)
        idx = np.array([row_of[i] for i in part["image_id"]], dtype=np.int64)
        x[name] = decoded.pixels[idx]
        y[name] = catalog.labels(part)
    return Prepared(catalog, parts, list(catalog.class_names), x, y, problems)


def _subset(catalog: Catalog, max_images, seed: int, cache_dir: str | None) -> pd.DataFrame:
    """split.subset, remembered in this process and on disk: on the full HAM10000 it takes seconds to minutes
    (StratifiedGroupKFold with many folds), and every trial of a sweep asks for the same one. Same ids, same order."""
    table = catalog.table
    if max_images is None or len(table) <= max_images or catalog.source == "synthetic":
        return subset(table, max_images, seed)
    key = digest("subset", catalog.dataset_id, int(max_images), int(seed))
    path = Path(cache_dir) / "subsets" / f"{key}.json" if cache_dir else None
    ids = _SUBSETS.get(key)
    if ids is None and path is not None and path.is_file():
        try:
            ids = json.loads(path.read_text())
        except (OSError, ValueError):
            ids = None
    if ids is not None:
        row = {image_id: i for i, image_id in enumerate(table["image_id"])}
        if all(i in row for i in ids):
            _SUBSETS.clear()
            _SUBSETS[key] = ids
            return table.iloc[[row[i] for i in ids]].reset_index(drop=True)
    part = subset(table, max_images, seed)
    ids = list(part["image_id"])
    _SUBSETS.clear()
    _SUBSETS[key] = ids
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(ids))
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("could not write subset cache %s (%s)", path, exc)
    return part
