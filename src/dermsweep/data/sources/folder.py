"""One sub-folder per class (e.g. the ISIC 2019 archive sorted by diagnosis). Each image is its own group."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ...errors import DataError
from ..catalog import Catalog, digest
from ..images import load_rgb
from . import SOURCES, folder_path

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")


@SOURCES.register("folder", root=folder_path)
def load(cfg) -> Catalog:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root={cfg.root!r}: no such folder (expected one sub-folder of images per class)")
    extensions = {e.lower() for e in (cfg.get("extensions") or EXTENSIONS)}
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    rows = []
    for d in class_dirs:
        for p in sorted(d.iterdir()):
            if p.is_file() and p.suffix.lower() in extensions:
                rows.append((f"{d.name}/{p.stem}", d.name, f"{d.name}/{p.stem}", str(p)))
    class_names = sorted({r[1] for r in rows})
    if len(class_names) < 2:
        raise DataError(
            f"data.root={cfg.root!r}: found {len(class_names)} class folder(s) with images ({', '.join(extensions)}); "
            "expected at least two, e.g. <root>/MEL/*.jpg and <root>/NV/*.jpg"
        )
    table = pd.DataFrame(rows, columns=["image_id", "label", "group", "path"])
    sizes = [Path(p).stat().st_size for p in table["path"]]
    dataset_id = digest("folder", list(table["image_id"]), sizes)
    return Catalog("folder", class_names, table, _read, dataset_id)


def _read(row, height: int, width: int):
    return load_rgb(row["path"], height, width)
