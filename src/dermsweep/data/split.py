"""Train / validation / test split: grouped by lesion (no lesion in two splits), stratified by diagnosis.

The split's identity is a hash of the image ids in each part, logged with every run: two runs with the same split id
were trained and scored on exactly the same images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from .catalog import digest


@dataclass(frozen=True)
class Split:
    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    split_id: str

    def sizes(self) -> dict[str, int]:
        return {"train": len(self.train), "val": len(self.val), "test": len(self.test)}


def _carve(table: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split off about `fraction` of the rows as one stratified, grouped fold. Returns (rest, carved)."""
    n_splits = max(2, round(1.0 / fraction))
    n_groups = table["group"].nunique()
    if n_groups < n_splits:
        raise ValueError(f"only {n_groups} lesion groups: too few to split off a {fraction:.0%} part")
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    # sklearn warns when a class has fewer groups than folds (rare classes in tiny subsets); the split stays valid.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rest_idx, part_idx = next(folds.split(table, table["label"], table["group"]))
    return table.iloc[rest_idx], table.iloc[part_idx]


def split(table: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int) -> Split:
    table = table.sort_values("image_id").reset_index(drop=True)  # order-independent: same ids, same split
    rest, test = _carve(table, test_fraction, seed)
    rest, val = _carve(rest.reset_index(drop=True), val_fraction / (1.0 - test_fraction), seed + 1)
    parts = [p.reset_index(drop=True) for p in (rest, val, test)]
    split_id = digest(*(sorted(p["image_id"]) for p in parts))
    return Split(*parts, split_id=split_id)


def subset(table: pd.DataFrame, max_images: int, seed: int) -> pd.DataFrame:
    """A stratified, lesion-grouped subset of at most max_images rows (whole lesions only)."""
    if max_images is None or len(table) <= max_images:
        return table
    table = table.sort_values("image_id").reset_index(drop=True)
    n_splits = max(2, int(np.ceil(len(table) / max_images)))
    if table["group"].nunique() >= n_splits:
        _, part = _carve(table, 1.0 / n_splits, seed + 7)
    else:
        part = table
    if len(part) > max_images:  # folds are uneven: drop whole lesions from the end until it fits
        keep, total = [], 0
        for _, grp in part.groupby("group", sort=True):
            if total + len(grp) <= max_images:
                keep.append(grp)
                total += len(grp)
        part = pd.concat(keep)
    return part.reset_index(drop=True)
