"""Generated lesion-like images: deterministic, learnable, no files. For tests, demos and CI.

Each class is a blob with its own hue and shape on a skin-toned background, with random position, size, rotation
and noise. Colour alone separates the classes, shape adds a second cue, so a few epochs learn it.
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from ...checks import Range
from ...errors import ConfigError
from ..catalog import Catalog, digest
from . import SOURCES

# (RGB of the lesion, shape) per class index; cycles if there are more classes.
_STYLES = [
    ((190, 40, 40), "disc"),  # red
    ((240, 150, 220), "ring"),  # pink
    ((200, 170, 40), "square"),  # ochre
    ((60, 150, 70), "cross"),  # green
    ((30, 20, 25), "disc"),  # near black
    ((120, 75, 45), "ellipse"),  # brown
    ((110, 40, 160), "ring"),  # purple
    ((60, 100, 190), "square"),  # blue
    ((150, 150, 150), "cross"),  # grey
]


@SOURCES.register(
    "synthetic",
    num_images=Range(20, integer=True),
    majority_share=Range(0, 1, lo_open=True, hi_open=True),
    images_per_lesion=Range(1, integer=True),
)
def load(cfg) -> Catalog:
    names = list(cfg.class_names)
    k = len(names)
    n = int(cfg.num_images)
    if k < 2 or n < 10 * k:
        raise ConfigError(f"data.num_images={n} with {k} classes: need at least 10 images per class and 2 classes")
    share = float(cfg.majority_share)
    if not 1.0 / k <= share < 1.0:
        raise ConfigError(f"data.majority_share={share}: must be in [1/num_classes, 1)")
    # The last-but-one class (nv for HAM10000 names) is the majority, like HAM10000.
    majority = max(k - 2, 0)
    counts = np.full(k, (n - round(n * share)) // (k - 1))
    counts[majority] = n - counts.sum() + counts[majority]
    per_lesion = max(1, int(cfg.images_per_lesion))
    rows = []
    for c, count in enumerate(counts):
        for i in range(int(count)):
            rows.append((f"syn_{names[c]}_{i:05d}", names[c], f"lesion_{names[c]}_{i // per_lesion:05d}", None))
    table = pd.DataFrame(rows, columns=["image_id", "label", "group", "path"])
    class_of = {name: i for i, name in enumerate(names)}

    def read(row, height: int, width: int) -> np.ndarray:
        return render(row["image_id"], class_of[row["label"]], height, width)

    dataset_id = digest("synthetic", names, n, share, per_lesion)
    return Catalog("synthetic", names, table, read, dataset_id)


def render(image_id: str, class_index: int, height: int, width: int) -> np.ndarray:
    """One image, the same every time for the same id and size."""
    rng = np.random.default_rng(zlib.crc32(image_id.encode()))
    colour, shape = _STYLES[class_index % len(_STYLES)]
    skin = np.array([225, 185, 160]) + rng.normal(0, 12, 3)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * rng.uniform(0.35, 0.65), width * rng.uniform(0.35, 0.65)
    r = min(height, width) * rng.uniform(0.18, 0.32)
    angle = rng.uniform(0, np.pi)
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / r
    v = (-dx * np.sin(angle) + dy * np.cos(angle)) / r
    if shape == "disc":
        mask = u**2 + v**2 <= 1
    elif shape == "ring":
        mask = (u**2 + v**2 <= 1) & (u**2 + v**2 >= 0.45)
    elif shape == "square":
        mask = (np.abs(u) <= 0.85) & (np.abs(v) <= 0.85)
    elif shape == "cross":
        mask = ((np.abs(u) <= 1) & (np.abs(v) <= 0.3)) | ((np.abs(v) <= 1) & (np.abs(u) <= 0.3))
    else:  # ellipse
        mask = (u / 1.3) ** 2 + (v / 0.7) ** 2 <= 1
    img = np.broadcast_to(skin, (height, width, 3)).copy()
    lesion = np.array(colour) + rng.normal(0, 15, 3)
    img[mask] = lesion
    img += rng.normal(0, 10, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)
