"""Lesion-grouped, stratified, deterministic splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermsweep.data.split import split, subset


def table(n_lesions=300, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    classes = np.array(["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"])
    probs = np.array([0.033, 0.051, 0.11, 0.012, 0.111, 0.669, 0.014])
    probs = probs / probs.sum()
    rows = []
    for lesion in range(n_lesions):
        label = rng.choice(classes, p=probs)
        for k in range(rng.integers(1, 4)):  # 1-3 images per lesion, like HAM10000
            rows.append((f"ISIC_{lesion:05d}_{k}", label, f"HAM_{lesion:05d}", None))
    return pd.DataFrame(rows, columns=["image_id", "label", "group", "path"])


def test_no_lesion_in_two_splits_and_every_image_once():
    t = table(1500)
    s = split(t, 0.15, 0.15, seed=42)
    groups = [set(part["group"]) for part in (s.train, s.val, s.test)]
    assert not (groups[0] & groups[1]) and not (groups[0] & groups[2]) and not (groups[1] & groups[2])
    ids = pd.concat([s.train, s.val, s.test])["image_id"]
    assert ids.is_unique and set(ids) == set(t["image_id"])


def test_sizes_and_stratification_follow_the_fractions():
    t = table(3000)
    s = split(t, 0.15, 0.15, seed=1)
    n = len(t)
    assert abs(len(s.test) / n - 0.15) < 0.03 and abs(len(s.val) / n - 0.15) < 0.03
    overall = t["label"].value_counts(normalize=True)
    for part in (s.train, s.val, s.test):
        share = part["label"].value_counts(normalize=True)
        for label in ("nv", "mel", "bkl"):
            assert abs(share.get(label, 0) - overall[label]) < 0.03, (label, share.get(label), overall[label])
        assert set(part["label"]) == set(t["label"])  # even df and vasc appear in every split


def test_deterministic_and_order_independent_with_identity():
    t = table(800)
    a = split(t, 0.15, 0.15, seed=42)
    b = split(t.sample(frac=1, random_state=3), 0.15, 0.15, seed=42)
    assert a.split_id == b.split_id
    assert list(a.test["image_id"]) == list(b.test["image_id"])
    c = split(t, 0.15, 0.15, seed=43)
    assert c.split_id != a.split_id


def test_too_few_lesions_is_an_error():
    with pytest.raises(ValueError, match="lesion groups"):
        split(table(3), 0.15, 0.15, seed=0)


def test_subset_keeps_whole_lesions_and_classes():
    t = table(2000)
    sub = subset(t, 400, seed=0)
    assert 200 <= len(sub) <= 400
    for lesion, grp in sub.groupby("group"):
        assert len(grp) == (t["group"] == lesion).sum()  # whole lesions only
    assert set(sub["label"]) == set(t["label"])
    assert subset(t, None, 0) is t and subset(t, 10**6, 0) is t
    assert list(subset(t, 400, seed=0)["image_id"]) == list(sub["image_id"])
