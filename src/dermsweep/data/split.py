"""Train / validation / test split: grouped by lesion (no lesion in two splits), stratified by diagnosis.

The split's identity is a hash of the image ids in each part, logged with every run: two runs with the same split id
were trained and scored on exactly the same images.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    return _fold(table, n_splits, 0, seed)


def split(
    table: pd.DataFrame,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    folds: int | None = None,
    fold: int | None = None,
) -> Split:
    """Train / validation / test. With `folds` (cross-validation), validation is fold `fold` of a lesion-grouped
    k-fold over everything but test, so the test part is the same for every fold and for the one-split mode."""
    table = table.sort_values("image_id").reset_index(drop=True)  # order-independent: same ids, same split
    rest, test = _carve(table, test_fraction, seed)
    rest = rest.reset_index(drop=True)
    if folds is None:
        rest, val = _carve(rest, val_fraction / (1.0 - test_fraction), seed + 1)
    else:
        rest, val = _fold(rest, folds, 0 if fold is None else fold, seed + 1)
    parts = [p.reset_index(drop=True) for p in (rest, val, test)]
    split_id = digest(*(sorted(p["image_id"]) for p in parts))
    return Split(parts[0], parts[1], parts[2], split_id=split_id)


def _fold(table: pd.DataFrame, folds: int, fold: int, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fold `fold` of a stratified, lesion-grouped k-fold of the table. Returns (the other folds, this fold)."""
    if table["group"].nunique() < folds:
        raise ValueError(f"only {table['group'].nunique()} lesion groups: too few for {folds} folds")
    splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
    # sklearn warns when a class has fewer groups than folds (rare classes in tiny subsets); the split stays valid.
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        rest_idx, part_idx = list(splitter.split(table, table["label"], table["group"]))[fold]
    return table.iloc[rest_idx], table.iloc[part_idx]


def subset(table: pd.DataFrame, max_images: int, seed: int) -> pd.DataFrame:
    """A stratified, lesion-grouped subset of at most max_images rows (whole lesions only). Linear time.

    Lesions are shuffled from the seed; each class then contributes whole lesions until it holds its share of
    max_images (at least one lesion per class, so rare classes are never lost).
    """
    if max_images is None or len(table) <= max_images:
        return table
    table = table.sort_values("image_id").reset_index(drop=True)
    lesions = table.groupby("group", sort=True).agg(label=("label", "first"), n=("image_id", "size"))
    lesions = lesions.sample(frac=1.0, random_state=seed + 7)
    share = max_images / len(table)
    keep: list[str] = []
    for _, of_class in lesions.groupby("label", sort=True):
        budget = share * of_class["n"].sum()
        taken = (of_class["n"].cumsum() <= max(budget, of_class["n"].iloc[0])).to_numpy()
        keep.extend(of_class.index[taken])
    chosen = lesions.loc[keep]
    # Rounding up to whole lesions can overshoot: drop the last-shuffled lesions of the largest class until it fits.
    while chosen["n"].sum() > max_images:
        largest = chosen["label"].value_counts().idxmax()
        chosen = chosen.drop(chosen.index[chosen["label"] == largest][-1])
    return table[table["group"].isin(set(chosen.index))].reset_index(drop=True)
