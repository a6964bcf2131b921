"""ISIC 2018 Task 3 layout: a folder of images plus the ground-truth CSV with one-hot columns.

    <root>/ISIC2018_Task3_Test_GroundTruth.csv   image, MEL, NV, BCC, AKIEC, BKL, DF, VASC (1.0 in one column)
    <root>/<images>/ISIC_0034524.jpg ...

The ISIC archive gives these sets no lesion ids: each image is its own group. Users download them separately
(https://challenge.isic-archive.com/data/#2018); the class codes map onto HAM10000's.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import DataError
from ..catalog import Catalog, digest
from ..images import load_rgb
from . import SOURCES, folder_path
from .ham10000 import CLASS_NAMES

# ISIC 2018 column -> HAM10000 class code
COLUMNS = {"AKIEC": "akiec", "BCC": "bcc", "BKL": "bkl", "DF": "df", "MEL": "mel", "NV": "nv", "VASC": "vasc"}


@SOURCES.register("isic2018", root=folder_path)
def load(cfg) -> Catalog:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root={cfg.root!r}: no such folder (expected the ISIC 2018 Task 3 images and CSV)")
    csv = _ground_truth(root, cfg.get("labels"))
    try:
        table = pd.read_csv(csv)
    except Exception as exc:
        raise DataError(f"{csv}: cannot read as CSV ({exc})") from exc
    missing = [c for c in ("image", *COLUMNS) if c not in table.columns]
    if missing:
        raise DataError(f"{csv}: missing column(s) {missing}; expected image, {', '.join(COLUMNS)}")
    onehot = table[list(COLUMNS)].apply(pd.to_numeric, errors="coerce")
    problems = []
    valid = onehot.notna().all(axis=1) & (onehot.sum(axis=1) == 1) & onehot.isin([0, 1]).all(axis=1)
    for image in table.loc[~valid, "image"]:
        problems.append(f"{image}: ground truth is not one-hot over {', '.join(COLUMNS)}")
    table, onehot = table[valid], onehot[valid]
    labels = onehot.idxmax(axis=1).map(COLUMNS)
    files = {p.stem: p for p in sorted(root.glob(str(cfg.image_glob))) if p.is_file()}
    has_file = table["image"].astype(str).isin(files.keys())
    for image in table.loc[~has_file, "image"]:
        problems.append(f"{image}: listed in {csv.name} but no image file found")
    table, labels = table[has_file], labels[has_file]
    if table.empty:
        raise DataError(f"{csv}: no row matches an image file under {root} ({cfg.image_glob})")
    ids = table["image"].astype(str).to_numpy()
    catalog = pd.DataFrame(
        {"image_id": ids, "label": labels.to_numpy(), "group": ids, "path": [str(files[i]) for i in ids]}
    ).reset_index(drop=True)
    sizes = [files[i].stat().st_size for i in ids]
    dataset_id = digest("isic2018", csv.read_bytes(), list(ids), sizes)
    return Catalog("isic2018", list(CLASS_NAMES), catalog, _read, dataset_id, problems)


def _ground_truth(root: Path, name: str | None) -> Path:
    if name:
        path = root / str(name)
        if not path.is_file():
            raise DataError(f"data.labels={name!r}: no such file in {root}")
        return path
    found = sorted(root.glob("*GroundTruth*.csv")) or sorted(root.glob("*.csv"))
    if len(found) != 1:
        raise DataError(
            f"data.root={str(root)!r}: expected one ground-truth CSV (e.g. "
            f"ISIC2018_Task3_Test_GroundTruth.csv), found {[p.name for p in found] or 'none'}; "
            "name it with data.labels"
        )
    return found[0]


def _read(row, height: int, width: int):
    return load_rgb(row["path"], height, width)
