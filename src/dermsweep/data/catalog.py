"""The common shape every data source produces: a table of labelled images and a way to get their pixels."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

# Columns of Catalog.table: image_id (unique), label (class name), group (lesion id; images of one lesion never
# straddle two splits), path (file, or None for generated images).
COLUMNS = ("image_id", "label", "group", "path")


@dataclass
class Catalog:
    source: str
    class_names: list[str]
    table: pd.DataFrame
    # Reads one row's pixels at (height, width) as uint8 RGB; raises images.BadImage.
    read: Callable[[pd.Series, int, int], np.ndarray]
    # Identity of the dataset as found on disk (metadata + file names and sizes), for reproducibility.
    dataset_id: str
    # Problems found while indexing (e.g. "ISIC_1: listed in metadata but no image file"), reported and skipped.
    problems: list[str] = field(default_factory=list)

    def labels(self, table: pd.DataFrame | None = None) -> np.ndarray:
        """Class indices (int32) of `table` rows in class_names order."""
        t = self.table if table is None else table
        index = {name: i for i, name in enumerate(self.class_names)}
        return t["label"].map(index).to_numpy(dtype=np.int32)


def digest(*parts: object) -> str:
    """Short stable hash of the given parts (12 hex chars)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(repr(part).encode())
        h.update(b"\0")
    return h.hexdigest()[:12]
