"""Data: sources (one file each), the lesion-grouped split, decoding with caches, and the tf.data pipeline.

`prepare(cfg)` is the one call the task makes: index the source, take the subset, decode (finding bad files),
split. It raises DataError before any training or tracking when the data cannot be used.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from . import folder, ham10000, synthetic
from .catalog import Catalog
from .pixels import decode
from .split import Split, split, subset

log = logging.getLogger(__name__)
SOURCES = {"ham10000": ham10000.load, "folder": folder.load, "synthetic": synthetic.load}


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
    table = subset(catalog.table, data_cfg.max_images, seed)
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
