"""Data: sources (one file each), the lesion-grouped split, decoding with caches, augmentation and the pipeline.

`prepare(cfg)` is the one call the task makes: index the source, take the subset, decode (finding bad files),
split. It raises DataError before any training or tracking when the data cannot be used.

A sweep runs many trials on the same data in one process, so the index and the split are kept in the process
cache (dermsweep.cache, like the pixels): indexing HAM10000 (10k files) cost ~0.5 s and the grouped split ~0.4 s per
trial. The index is reused only while the source folder's listing and top-level files look unchanged (mtimes and sizes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ..cache import ProcessCache
from ..errors import DataError
from .catalog import Catalog, digest
from .pixels import decode
from .sources import SOURCES
from .split import Split, split, subset

log = logging.getLogger(__name__)
_CATALOGS: ProcessCache[Catalog] = ProcessCache("source index")
_SPLITS: ProcessCache[Split] = ProcessCache("split")


@dataclass
class Prepared:
    catalog: Catalog
    split: Split
    class_names: list[str]
    x: dict[str, np.ndarray]  # "train" / "val" / "test" -> uint8 (n, h, w, 3)
    y: dict[str, np.ndarray]  # class indices
    problems: list[str]  # every skipped row or file with its reason

    @property
    def dataset_id(self) -> str:
        return self.catalog.dataset_id


def prepare(data_cfg, height: int, width: int, seed: int, cache_dir: str | None) -> Prepared:
    catalog = _catalog(data_cfg)
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
    parts = _split(
        decoded.table,
        data_cfg.split.val_fraction,
        data_cfg.split.test_fraction,
        seed,
        data_cfg.split.get("folds"),
        data_cfg.split.get("fold"),
    )
    row_of = {image_id: i for i, image_id in enumerate(decoded.table["image_id"])}
    x, y = {}, {}
    for name in ("train", "val", "test"):
        part = getattr(parts, name)
        idx = np.array([row_of[i] for i in part["image_id"]], dtype=np.int64)
        x[name] = decoded.pixels[idx]
        y[name] = catalog.labels(part)
    return Prepared(catalog, parts, list(catalog.class_names), x, y, problems)


def _catalog(data_cfg) -> Catalog:
    node = OmegaConf.to_container(data_cfg, resolve=True)
    assert isinstance(node, dict)
    settings = {k: v for k, v in node.items() if k not in ("max_images", "split", "strict")}
    key = digest(settings, _stamp(data_cfg.get("root")))
    return _CATALOGS.get(key, lambda: SOURCES.get(data_cfg.source)(data_cfg))


def _stamp(root) -> list:
    """Cheap change detector for a source folder: the folder and its subfolders' mtimes (a file added, removed or
    renamed changes them) and the size and mtime of the files at its top (the metadata CSV)."""
    if not root:
        return []
    path = Path(str(root)).expanduser()
    try:
        stats = [(p.name, p.stat()) for p in (path, *sorted(path.iterdir()))]
        return [(name, st.st_mode, st.st_mtime_ns, st.st_size) for name, st in stats]
    except OSError:
        return ["unreadable"]  # the source itself reports what is wrong


def _split(table, val_fraction: float, test_fraction: float, seed: int, folds=None, fold=None) -> Split:
    folds, fold = (int(folds), int(fold or 0)) if folds else (None, None)
    key = digest(
        list(table["image_id"]),
        list(table["label"]),
        list(table["group"]),
        val_fraction,
        test_fraction,
        seed,
        *((folds, fold) if folds else ()),
    )

    def build() -> Split:
        try:
            return split(table, val_fraction, test_fraction, seed, folds, fold)
        except ValueError as exc:
            raise DataError(f"cannot split {len(table)} images: {exc}; use more images (data.max_images)") from exc

    return _SPLITS.get(key, build)
