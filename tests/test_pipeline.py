"""The input pipeline: augmentation geometry and the datasets' shapes, order and labels."""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from omegaconf import OmegaConf

from conftest import compose
from dermsweep.data.augment import build_augmenter
from dermsweep.data.pipeline import eval_dataset, training_dataset


def augment_cfg(**over):
    base = OmegaConf.to_container(compose(["augment=none"]).augment)
    return OmegaConf.create({**base, **over})


def images(n=8, h=12, w=16):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, h, w, 3)).astype(np.float32)


def test_no_augmentation_is_no_op():
    assert build_augmenter(augment_cfg(), seed=0) is None


def test_flips_only_mirror_the_image():
    x = images()
    out = build_augmenter(augment_cfg(horizontal_flip=True, vertical_flip=True), seed=1)(tf.constant(x), training=True)
    out = out.numpy()
    kinds = set()
    for a, b in zip(x, out, strict=False):
        for name, ref in (("id", a), ("h", a[:, ::-1]), ("v", a[::-1]), ("hv", a[::-1, ::-1])):
            if np.allclose(b, ref, atol=1e-3):
                kinds.add(name)
                break
        else:
            raise AssertionError("a flip-only augmentation produced something that is not a flip")
    assert len(kinds) >= 2  # random per image, not one flip for the whole batch


def test_rotation_keeps_shape_range_and_varies_per_image():
    x = np.repeat(images(1), 6, axis=0)
    out = build_augmenter(augment_cfg(rotation=180, fill_mode="nearest"), seed=2)(tf.constant(x), training=True)
    out = out.numpy()
    assert out.shape == x.shape and out.min() >= -1e-3 and out.max() <= 255 + 1e-3
    assert len({round(float(o.sum()), 1) for o in out}) > 1


def test_training_dataset_batches_all_images_with_matching_labels():
    x = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(10)])
    y = np.arange(10) % 3
    ds = training_dataset(x, y, 3, batch_size=4, augment_cfg=augment_cfg(), seed=0, repeat=False)
    seen = []
    for bx, by in ds:
        assert bx.dtype == tf.float32 and by.shape[1] == 3
        for img, onehot in zip(bx.numpy(), by.numpy(), strict=False):
            i = int(img[0, 0, 0])
            assert onehot.argmax() == y[i]
            seen.append(i)
    assert sorted(seen) == list(range(10))
    ev = np.concatenate([b.numpy() for b in eval_dataset(x, 4)])
    assert [int(v) for v in ev[:, 0, 0, 0]] == list(range(10))  # evaluation keeps order


def test_warp_matches_tensorflows_projective_transform():
    """The OpenCV warp reads the matrices as TF's transforms do (output -> input pixel, same pixel centres)."""
    aug = build_augmenter(augment_cfg(rotation=180, zoom=0.1, width_shift=0.1, fill_mode="nearest"), seed=3)
    yy, xx = np.mgrid[0:24, 0:32].astype(np.float32)
    smooth = np.stack([xx * 7, yy * 9, (xx + yy) * 4], axis=-1)[None].repeat(4, axis=0)  # gradients: no aliasing
    mats = aug.matrices(4, 24, 32)
    ours = aug._warp(smooth, mats.numpy())
    flat = tf.concat([tf.reshape(mats, (4, 6)), tf.zeros((4, 2))], axis=1)
    ref = tf.raw_ops.ImageProjectiveTransformV3(
        images=smooth,
        transforms=flat,
        output_shape=[24, 32],
        fill_value=0.0,
        interpolation="BILINEAR",
        fill_mode="NEAREST",
    ).numpy()
    inner = (slice(None), slice(2, -2), slice(2, -2))  # border rounding may differ by a pixel
    assert np.abs(ours[inner] - ref[inner]).max() < 2.0
