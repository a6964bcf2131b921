"""Strict image decoding at every door (data/images.py) and the metadata rows training cannot use.

Pillow pads a JPEG scan that ends early with grey and raises nothing; these tests build the corrupt files an
attacker or a failing disk produces and check that each is refused with the reason, in training (problems.txt,
data.strict) and in the REST model's rows, while genuine HAM10000 photos still decode.
"""

from __future__ import annotations

import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf
from PIL import Image, ImageFile

from dermsweep.data import prepare
from dermsweep.data.images import BadImage, decode_rgb, load_rgb
from dermsweep.errors import DataError
from helpers.config import HAM10000, compose
from helpers.jpegs import cut_in_half, photo_jpeg, scan_zeroed, tiny_claiming

CORRUPT = {
    "half": lambda: cut_in_half(photo_jpeg()),
    "zeroed": lambda: scan_zeroed(photo_jpeg()),
    "6000x6000": lambda: tiny_claiming(6000, 6000),
    "progressive half": lambda: cut_in_half(photo_jpeg(progressive=True)),
}


def test_pillow_alone_accepts_these_files():
    """Why the check exists: without it each corrupt file decodes (this is what the old load_rgb did)."""
    assert len(CORRUPT["6000x6000"]()) < 700
    for make in CORRUPT.values():
        img = Image.open(io.BytesIO(make()))
        img.load()
        assert img.size[0] > 0


@pytest.mark.parametrize("kind", list(CORRUPT))
def test_corrupt_jpegs_are_refused_with_the_reason(kind):
    with pytest.raises(BadImage, match=r"corrupt or truncated JPEG \(.*(premature end|Premature end|Corrupt)"):
        load_rgb(CORRUPT[kind](), 32, 32)


def test_good_jpegs_still_decode_to_the_same_pixels():
    for data in (photo_jpeg(), photo_jpeg(progressive=True), photo_jpeg(size=(64, 48), subsampling=0)):
        ours = np.asarray(decode_rgb(data))
        assert np.array_equal(ours, np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (20, 20, 4), dtype=np.uint8), "CMYK").save(buf, "JPEG")
    assert load_rgb(buf.getvalue(), 8, 8).shape == (8, 8, 3)  # CMYK JPEGs are checked too, not refused


def test_genuine_ham10000_photos_are_accepted():
    images = sorted((HAM10000 / "HAM10000_images_part_1").glob("*.jpg"))[::17][:300]
    if not images:
        pytest.skip(f"shared HAM10000 copy not found at {HAM10000}")
    refused = []
    for path in images:
        try:
            load_rgb(path, 15, 20)
        except BadImage as exc:
            refused.append(str(exc))
    assert not refused, refused[:3]


def test_truncated_images_setting_turned_on_elsewhere_is_refused(monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(BadImage, match="LOAD_TRUNCATED_IMAGES is on"):
        load_rgb(photo_jpeg(), 8, 8)


def test_without_the_checker_jpegs_are_refused_not_trusted(monkeypatch):
    monkeypatch.setitem(sys.modules, "simplejpeg", None)  # import fails
    with pytest.raises(BadImage, match="simplejpeg package is missing"):
        load_rgb(photo_jpeg(), 8, 8)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    assert load_rgb(buf.getvalue(), 8, 8).shape == (8, 8, 3)  # other formats need no checker


def test_the_rest_model_answers_a_corrupt_jpeg_with_an_error_row():
    from dermsweep.shipping.serving import SkinLesionClassifier

    class Model:
        def predict_on_batch(self, x):
            return np.tile(np.eye(7)[5], (len(x), 1))

    served = SkinLesionClassifier()
    served.model, served.height, served.width = Model(), 16, 16
    served.class_names, served.full_names, served.operating_point = list("abcdefg"), {}, None
    rows = served._chunk([photo_jpeg(), CORRUPT["half"]()])
    assert rows[0]["error"] is None and rows[0]["label"] == "f"
    assert rows[1]["label"] is None and "corrupt or truncated JPEG" in rows[1]["error"]


# --- training: the files and rows it skips, lists and (data.strict=true) refuses ---


def ham_cfg(root, **over):
    return OmegaConf.merge(compose(["data=ham10000", f"data.root={root}"]).data, over)


@pytest.fixture
def damaged_ham(ham_subset, tmp_path) -> tuple[Path, dict[str, str]]:
    """A copy of the HAM10000 subset with the three corrupt JPEGs and rows with a blank dx, lesion_id or image_id."""
    root = tmp_path / "damaged"
    shutil.copytree(ham_subset, root, symlinks=False)
    images = sorted((root / "HAM10000_images_part_1").glob("*.jpg"))
    names = {}
    for path, kind in zip(images, ["half", "zeroed", "6000x6000"], strict=False):
        original = path.read_bytes()
        path.write_bytes(
            cut_in_half(original) if kind == "half" else scan_zeroed(original) if kind == "zeroed" else CORRUPT[kind]()
        )
        names[kind] = path.stem
    meta = pd.read_csv(root / "HAM10000_metadata.csv", dtype=str)
    rows = meta.index[meta["image_id"].isin({p.stem for p in images[3:6]})]
    meta.loc[rows[0], "dx"] = ""
    meta.loc[rows[1], "lesion_id"] = None
    meta.loc[rows[2], "image_id"] = "   "
    names |= {"blank dx": meta.at[rows[0], "image_id"], "blank lesion_id": meta.at[rows[1], "image_id"]}
    names["blank image_id"] = f"line {rows[2] + 2} of HAM10000_metadata.csv"
    meta.to_csv(root / "HAM10000_metadata.csv", index=False)
    return root, names


def test_training_skips_and_lists_corrupt_jpegs_and_blank_rows(damaged_ham):
    root, names = damaged_ham
    data = prepare(ham_cfg(root), 32, 32, seed=0, cache_dir=None)
    text = "\n".join(data.problems)
    for kind in ("half", "zeroed", "6000x6000"):
        assert f"{names[kind]}: " in text and "corrupt or truncated JPEG" in text, kind
    assert f"{names['blank dx']}: blank dx in HAM10000_metadata.csv; the row is skipped" in text
    assert f"{names['blank lesion_id']}: blank lesion_id in HAM10000_metadata.csv" in text
    assert f"{names['blank image_id']}: blank image_id in HAM10000_metadata.csv" in text
    assert len(data.problems) == 6
    used = set().union(*(set(getattr(data.split, p)["image_id"]) for p in ("train", "val", "test")))
    assert not used & {names[k] for k in ("half", "zeroed", "6000x6000", "blank dx", "blank lesion_id")}


def test_strict_data_refuses_corrupt_jpegs_and_blank_rows(damaged_ham):
    root, names = damaged_ham
    with pytest.raises(DataError, match=r"6 problem\(s\) in the data and data.strict=true") as err:
        prepare(ham_cfg(root, strict=True), 32, 32, seed=0, cache_dir=None)
    assert names["half"] in str(err.value) and names["blank dx"] in str(err.value)
