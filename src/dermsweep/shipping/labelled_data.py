"""Labelled images to score a shipped model on: the run's own split, rebuilt from the config it logged, or a
dataset a person points at (HAM10000 layout, ISIC 2018 Task 3 CSV, or one folder per class).

Every image goes through the data package's sources and decoder, so a bad file is skipped and listed, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from ..data import Prepared, prepare
from ..data.catalog import Catalog
from ..data.images import BadImage, load_rgb
from ..data.pixels import decode
from ..data.sources import SOURCES
from ..data.sources.folder import EXTENSIONS
from ..data.split import subset
from ..errors import DataError
from ..tracking import run_format as rf
from ..tracking.store import first_line


@dataclass
class Labelled:
    x: np.ndarray  # uint8 (n, H, W, 3)
    y: np.ndarray  # class indices in the model's class order
    source: str  # where these images came from, for reports
    skipped: list[str] = field(default_factory=list)  # bad files and rows, with reasons
    image_ids: list[str] = field(default_factory=list)  # one per row of x: what a dataset digest is made of
    layout: str = ""  # ham10000 | isic2018 | folder


def layout_of(root: Path) -> str:
    """Which source reads `root`: ham10000 (metadata CSV), isic2018 (ground-truth CSV) or folder."""
    if (root / "HAM10000_metadata.csv").is_file():
        return "ham10000"
    if ground_truth_csvs(root):
        return "isic2018"
    return "folder"


def ground_truth_csvs(root: Path) -> list[Path]:
    """ISIC ground-truth CSVs in `root`, else one folder down: the ISIC archive's ground truth unzips to its own
    folder (ISIC2018_Task3_Test_GroundTruth/ISIC2018_Task3_Test_GroundTruth.csv) beside the images' folder."""
    return sorted(root.glob("*GroundTruth*.csv")) or sorted(root.glob("*/*GroundTruth*.csv"))


def source_config(root: str | Path, layout: str | None = None) -> dict:
    """A data config node for `root` with the source's defaults (conf/data/<source>.yaml holds the same)."""
    root = Path(root)
    layout = layout or layout_of(root)
    node: dict = {"source": layout, "root": str(root), "max_images": None, "strict": False}
    if layout == "ham10000":
        node.update(metadata="HAM10000_metadata.csv", image_glob="*/*.jpg")
    elif layout == "isic2018":
        found = ground_truth_csvs(root)
        if len(found) > 1:
            raise DataError(
                f"{root}: several ground-truth CSVs ({', '.join(str(p.relative_to(root)) for p in found)}); "
                "point at a folder that holds one, beside its images"
            )
        node.update(labels=str(found[0].relative_to(root)) if found else None, image_glob="**/*.jpg")
    elif not _has_class_folders(root):
        folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if folders:
            raise DataError(
                f"{root}: no images: its sub-folders ({', '.join(folders[:8])}{', ...' if len(folders) > 8 else ''}) "
                f"hold no {' / '.join(EXTENSIONS)} files"
            )
        raise DataError(
            f"{root}: unknown layout: no HAM10000_metadata.csv, no ISIC ground-truth CSV (*GroundTruth*.csv) and "
            "no sub-folders of images (one per class, e.g. mel/*.jpg and nv/*.jpg)"
        )
    return node


def _has_class_folders(root: Path) -> bool:
    return any(
        p.suffix.lower() in EXTENSIONS
        for d in root.iterdir()
        if d.is_dir() and not d.name.startswith(".")
        for p in d.iterdir()
        if p.is_file()
    )


def read_dataset(
    root: str | Path,
    class_names: list[str],
    height: int,
    width: int,
    layout: str | None = None,
    max_images: int | None = None,
) -> Labelled:
    """Every usable image of the dataset at `root`, labelled in `class_names` order (the model's); with
    `max_images`, a fixed stratified subset of at most that many (a quick look; every class keeps some images)."""
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataError(
            f"{root}: no such folder (expected a HAM10000 folder, an ISIC 2018 Task 3 folder with its "
            f"ground-truth CSV, or one sub-folder per class: {', '.join(class_names)})"
        )
    cfg = OmegaConf.create(source_config(path, layout))
    catalog: Catalog = SOURCES.get(cfg.source)(cfg)
    labels = set(catalog.table["label"])
    if cfg.source == "folder":  # a misspelt class folder is a mistake even while it is empty
        labels |= {d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith(".")}
    unknown = sorted(labels - set(class_names))
    if unknown:
        raise DataError(f"{root}: classes {unknown} are not classes of this model ({', '.join(class_names)})")
    table = subset(catalog.table, max_images, seed=0) if max_images else catalog.table
    decoded = decode(catalog, table, height, width, None)
    if not len(decoded.table):
        raise DataError(f"{root}: no readable images ({len(decoded.bad)} unusable)")
    index = {name: i for i, name in enumerate(class_names)}
    y = decoded.table["label"].map(index).to_numpy(dtype=np.int64)
    return Labelled(
        decoded.pixels,
        y,
        f"{root} ({cfg.source} layout, {len(y)} images)",
        list(catalog.problems) + list(decoded.bad),
        [str(i) for i in decoded.table["image_id"]],
        str(cfg.source),
    )


def read_images(root: str | Path, height: int, width: int) -> np.ndarray:
    """Every readable image file under `root`, unlabelled (int8 calibration images)."""
    path = Path(root)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    pixels = []
    for f in files:
        try:
            pixels.append(load_rgb(f, height, width))
        except BadImage:
            continue
    if not pixels:
        raise DataError(f"{root}: no readable images")
    return np.stack(pixels)


def rebuild_run_data(run_id: str, height: int, width: int, fold: int | None = None) -> tuple[Prepared, list[str]]:
    """The data a run was trained and scored on, rebuilt from its logged config (same split, same pixels).
    A cross-validation's run is rebuilt only as one `fold`'s data (its test part is the CV's). Raises DataError
    when the run's data is not available here."""
    import mlflow

    client = mlflow.MlflowClient()
    # An ensemble trained nothing itself: its members share one split and input size, so the first one's config
    # rebuilds its data.
    tags = client.get_run(run_id).data.tags
    members = tags.get(rf.MEMBERS)
    source_run = members.split(",")[0] if members else run_id
    source = client.get_run(source_run)
    if rf.is_cross_validation(source.data.tags):
        if fold is None:
            what = "an ensemble of cross-validations' bags" if members else "a cross-validation's bag"
            raise DataError(
                f"run {run_id} is {what}: every train and validation image was trained on by some of its fold "
                "models, so the run has no held-out images to check it on; pass --data-dir with labelled images "
                "none of them saw (its test split is for reporting only)"
            )
        source_run = _fold_run(client, source.info.experiment_id, source_run, fold)
    try:
        cfg = OmegaConf.load(mlflow.artifacts.download_artifacts(run_id=source_run, artifact_path=rf.CONFIG))
    except Exception as exc:
        raise DataError(f"run {run_id} has no readable {rf.CONFIG} ({first_line(exc)})") from exc
    if "data" not in cfg:
        raise DataError(f"run {run_id}'s {rf.CONFIG} has no data section")
    split_seed = OmegaConf.select(cfg, "data.split.seed")
    seed = int(OmegaConf.select(cfg, "seed", default=42) if split_seed is None else split_seed)
    prepared = prepare(cfg.data, height, width, seed, OmegaConf.select(cfg, "cache_dir"))
    notes = []
    logged = tags.get(rf.SPLIT_ID)
    if logged and logged != prepared.split.split_id and fold is None:  # (a CV's id is its folds')
        notes.append(
            f"warning: rebuilt split {prepared.split.split_id} differs from the run's {logged}; "
            "figures are on the rebuilt split"
        )
    return prepared, notes


def _fold_run(client, experiment_id: str, cv_run_id: str, fold: int) -> str:
    """The run of a cross-validation's fold `fold` (its config is the fold's data; the CV's parent logs none)."""
    found = client.search_runs(
        [experiment_id],
        f"tags.`{rf.PARENT_RUN_ID}` = '{cv_run_id}' and tags.`{rf.FOLD}` = '{fold}'",
        max_results=1,
    )
    if not found:
        raise DataError(f"cross-validation {cv_run_id} has no run for fold {fold} to rebuild its data from")
    return str(found[0].info.run_id)
