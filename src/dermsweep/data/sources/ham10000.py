"""HAM10000 in the Kaggle layout: HAM10000_metadata.csv plus image folders (HAM10000_images_part_1/, _part_2/)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import DataError
from ..catalog import Catalog, digest
from ..images import load_rgb
from . import SOURCES, folder_path

CLASS_NAMES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
FULL_NAMES = {
    "akiec": "Actinic keratoses / intraepithelial carcinoma",
    "bcc": "Basal cell carcinoma",
    "bkl": "Benign keratosis-like lesions",
    "df": "Dermatofibroma",
    "mel": "Melanoma",
    "nv": "Melanocytic nevi",
    "vasc": "Vascular lesions",
}
WHERE_TO_GET = (
    "HAM10000 is at https://www.kaggle.com/datasets/kmader/skin-cancer-mnist-ham10000 "
    "or https://doi.org/10.7910/DVN/DBW86T (ISIC archive)"
)
REQUIRED_COLUMNS = ("lesion_id", "image_id", "dx")


@SOURCES.register("ham10000", root=folder_path)
def load(cfg) -> Catalog:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(
            f"data.root={cfg.root!r}: no such folder. Expected the Kaggle layout: {cfg.metadata} plus image folders "
            f"such as HAM10000_images_part_1/ and HAM10000_images_part_2/. {WHERE_TO_GET}; "
            f"then set data.root=/path/to/it (or HAM10000_ROOT)."
        )
    meta_path = root / cfg.metadata
    if not meta_path.is_file():
        raise DataError(
            f"data.root={cfg.root!r} has no {cfg.metadata}: expected the Kaggle layout (metadata CSV with columns "
            f"{', '.join(REQUIRED_COLUMNS)}, ... beside HAM10000_images_part_*/ folders). {WHERE_TO_GET}."
        )
    try:
        meta = pd.read_csv(meta_path, dtype=str)
    except Exception as exc:  # pandas raises many kinds for a garbage CSV
        raise DataError(f"{meta_path}: cannot read as CSV ({exc})") from exc
    missing = [c for c in REQUIRED_COLUMNS if c not in meta.columns]
    if missing:
        raise DataError(f"{meta_path}: missing column(s) {missing}; found {list(meta.columns)}")

    problems: list[str] = []
    meta = _without_blank_rows(meta, cfg.metadata, problems)
    unknown = meta[~meta["dx"].isin(CLASS_NAMES)]
    for row in unknown.itertuples():
        problems.append(f"{row.image_id}: unknown diagnosis {row.dx!r} (expected one of {', '.join(CLASS_NAMES)})")
    meta = meta[meta["dx"].isin(CLASS_NAMES)]
    dupes = meta[meta["image_id"].duplicated(keep="first")]
    for image_id in dupes["image_id"]:
        problems.append(f"{image_id}: listed more than once in {cfg.metadata}; the first row is used")
    meta = meta.drop_duplicates("image_id", keep="first")

    files = {p.stem: p for p in sorted(root.glob(cfg.image_glob)) if p.is_file()}
    if not files:
        raise DataError(
            f"data.root={cfg.root!r}: no image files matching {cfg.image_glob!r} (expected e.g. "
            f"HAM10000_images_part_1/ISIC_0024306.jpg). {WHERE_TO_GET}."
        )
    has_file = meta["image_id"].isin(files.keys())
    for image_id in meta.loc[~has_file, "image_id"]:
        problems.append(f"{image_id}: listed in {cfg.metadata} but no image file found")
    meta = meta[has_file]
    if meta.empty:
        raise DataError(f"{meta_path}: no row matches an image file under {root}")

    table = pd.DataFrame(
        {
            "image_id": meta["image_id"].to_numpy(),
            "label": meta["dx"].to_numpy(),
            "group": meta["lesion_id"].to_numpy(),
            "path": [str(files[i]) for i in meta["image_id"]],
        }
    ).reset_index(drop=True)
    sizes = [files[i].stat().st_size for i in table["image_id"]]
    dataset_id = digest("ham10000", meta_path.read_bytes(), list(table["image_id"]), sizes)
    return Catalog("ham10000", list(CLASS_NAMES), table, _read, dataset_id, problems)


def _without_blank_rows(meta: pd.DataFrame, metadata: str, problems: list[str]) -> pd.DataFrame:
    """The rows whose lesion_id, image_id and dx are all filled in; each other row is listed in `problems`
    (a blank dx has no label to learn and a blank lesion_id no group to keep out of two splits)."""
    blank = meta[list(REQUIRED_COLUMNS)].apply(lambda column: column.isna() | (column.str.strip() == ""))
    for index in meta.index[blank.any(axis=1)]:
        fields = [c for c in REQUIRED_COLUMNS if blank.at[index, c]]
        # a CSV line number when there is no image id to name (line 1 is the header)
        who = f"line {index + 2} of {metadata}" if blank.at[index, "image_id"] else str(meta.at[index, "image_id"])
        problems.append(f"{who}: blank {' and '.join(fields)} in {metadata}; the row is skipped")
    return meta[~blank.any(axis=1)]


def _read(row, height: int, width: int):
    return load_rgb(row["path"], height, width)
