"""The data sources on real (tiny) HAM10000 folders, corrupt files, and the generated dataset."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from omegaconf import OmegaConf

from dermsweep.data import prepare
from dermsweep.data.images import BadImage, load_rgb
from dermsweep.data.sources import synthetic as synthetic_source
from dermsweep.errors import DataError
from helpers.config import compose


def ham_cfg(root, **over):
    cfg = compose(["data=ham10000", f"data.root={root}"]).data
    return OmegaConf.merge(cfg, over)


def test_ham10000_subset_loads_and_splits_by_lesion(ham_subset, tmp_path):
    data = prepare(ham_cfg(ham_subset), 48, 64, seed=0, cache_dir=str(tmp_path))
    meta = pd.read_csv(ham_subset / "HAM10000_metadata.csv")
    assert data.class_names == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert sum(len(v) for v in data.x.values()) == len(meta) and not data.problems
    assert data.x["train"].shape[1:] == (48, 64, 3) and data.x["train"].dtype == np.uint8
    lesion = dict(zip(meta["image_id"], meta["lesion_id"], strict=False))
    seen = [set(map(lesion.get, getattr(data.split, p)["image_id"])) for p in ("train", "val", "test")]
    assert not (seen[0] & seen[1] or seen[0] & seen[2] or seen[1] & seen[2])
    # The disk cache serves the second call, with identical pixels.
    again = prepare(ham_cfg(ham_subset), 48, 64, seed=0, cache_dir=str(tmp_path))
    assert np.array_equal(again.x["val"], data.x["val"]) and again.split.split_id == data.split.split_id
    assert list((tmp_path / "pixels").glob("*.npy"))


@pytest.fixture
def broken_ham(ham_subset, tmp_path):
    """A copy of the subset with every kind of bad file and row."""
    root = tmp_path / "broken"
    shutil.copytree(ham_subset, root, symlinks=False)
    meta = pd.read_csv(root / "HAM10000_metadata.csv")
    part = root / "HAM10000_images_part_1"
    images = sorted(part.glob("*.jpg"))
    data = images[0].read_bytes()
    images[0].write_bytes(data[: len(data) // 3])  # truncated JPEG
    images[1].write_bytes(b"")  # zero bytes
    images[2].write_text("this is not an image\n")  # text file
    from PIL import Image  # a PNG named .jpg is still a valid image

    Image.open(images[3]).save(images[3].with_suffix(".png"), format="PNG")
    images[3].with_suffix(".png").rename(images[3])
    extra = [
        {"lesion_id": "HAM_X1", "image_id": "ISIC_missing", "dx": "nv"},  # no file
        {"lesion_id": "HAM_X2", "image_id": images[4].stem, "dx": "melanoma"},  # unknown label
        meta.iloc[5].to_dict(),  # duplicate row
    ]
    pd.concat([meta, pd.DataFrame(extra)]).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root, images


def test_bad_files_are_skipped_and_listed(broken_ham, tmp_path):
    root, images = broken_ham
    data = prepare(ham_cfg(root), 32, 32, seed=0, cache_dir=None)
    text = "\n".join(data.problems)
    assert f"{images[0].stem}: " in text and "truncated" in text
    assert f"{images[1].stem}: " in text and "empty file" in text
    assert f"{images[2].stem}: " in text and "not an image" in text
    assert "ISIC_missing: listed in HAM10000_metadata.csv but no image file" in text
    assert "unknown diagnosis 'melanoma'" in text and "listed more than once" in text
    assert images[3].stem not in text  # PNG content with a .jpg name decodes fine
    assert len(data.problems) == 6
    used = set().union(*(set(getattr(data.split, p)["image_id"]) for p in ("train", "val", "test")))
    assert images[0].stem not in used and images[3].stem in used


def test_strict_mode_fails_before_training_with_the_list(broken_ham):
    root, images = broken_ham
    with pytest.raises(DataError, match="data.strict=true") as err:
        prepare(ham_cfg(root, strict=True), 32, 32, seed=0, cache_dir=None)
    assert images[1].stem in str(err.value) and "6 problem(s)" in str(err.value)


def test_layout_errors_say_what_was_expected(tmp_path):
    with pytest.raises(DataError, match="no such folder.*Kaggle layout.*kaggle.com"):
        prepare(ham_cfg(tmp_path / "nope"), 32, 32, 0, None)
    with pytest.raises(DataError, match="has no HAM10000_metadata.csv"):
        prepare(ham_cfg(tmp_path), 32, 32, 0, None)
    (tmp_path / "HAM10000_metadata.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="missing column"):
        prepare(ham_cfg(tmp_path), 32, 32, 0, None)


def test_load_rgb_reasons(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(BadImage, match="empty file"):
        load_rgb(tmp_path / "empty.jpg", 8, 8)
    with pytest.raises(BadImage, match="cannot read"):
        load_rgb(tmp_path / "absent.jpg", 8, 8)
    with pytest.raises(BadImage, match="not an image"):
        load_rgb(b"hello", 8, 8)


def test_folder_source(tmp_path):
    for c, colour in (("MEL", (40, 20, 20)), ("NV", (150, 100, 80))):
        (tmp_path / c).mkdir()
        for i in range(12):
            from PIL import Image

            Image.new("RGB", (30, 20), colour).save(tmp_path / c / f"img{i}.jpg")
    cfg = OmegaConf.merge(compose(["data=folder", f"data.root={tmp_path}"]).data, {})
    data = prepare(cfg, 16, 16, 0, None)
    assert data.class_names == ["MEL", "NV"] and sum(len(y) for y in data.y.values()) == 24


def test_synthetic_is_deterministic_imbalanced_and_separable():
    cfg = compose(["data=synthetic"]).data
    a = prepare(cfg, 32, 32, 0, None)
    b = prepare(cfg, 32, 32, 0, None)
    assert np.array_equal(a.x["train"], b.x["train"]) and a.split.split_id == b.split.split_id
    counts = np.bincount(np.concatenate(list(a.y.values())))
    assert counts.argmax() == a.class_names.index("nv") and counts.min() >= 10
    # A nearest-class-mean on the mean colour already separates the classes well: the data is learnable.
    feats = {p: a.x[p].reshape(len(a.x[p]), -1, 3).mean(1) for p in ("train", "test")}
    centres = np.stack([feats["train"][a.y["train"] == c].mean(0) for c in range(7)])
    pred = np.argmin(((feats["test"][:, None] - centres[None]) ** 2).sum(-1), axis=1)
    assert (pred == a.y["test"]).mean() > 0.5
    assert synthetic_source.render("x", 3, 20, 30).shape == (20, 30, 3)
