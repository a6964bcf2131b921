"""The input pipeline: augmentation geometry and photometry, and the datasets' shapes, order, labels and epochs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import compose
from dermsweep.data.augment import build_augmenter
from dermsweep.data.pipeline import BatchStream, eval_dataset, training_batches


def augment_cfg(**over):
    base = OmegaConf.to_container(compose(["augment=none"]).augment)
    return OmegaConf.create({**base, **over})


def images(n=8, h=12, w=16):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8)


def rng(seed=0):
    return np.random.default_rng(seed)


def test_no_augmentation_is_no_op():
    assert build_augmenter(augment_cfg()) is None


def test_flips_only_mirror_the_image():
    x = images()
    out = build_augmenter(augment_cfg(horizontal_flip=True, vertical_flip=True))(x, rng(1))
    assert out.dtype == np.uint8  # pixels stay uint8: the model casts them on its device
    kinds = set()
    for a, b in zip(x, out, strict=True):
        for name, ref in (("id", a), ("h", a[:, ::-1]), ("v", a[::-1]), ("hv", a[::-1, ::-1])):
            if np.allclose(b, ref, atol=1e-3):
                kinds.add(name)
                break
        else:
            raise AssertionError("a flip-only augmentation produced something that is not a flip")
    assert len(kinds) >= 2  # random per image, not one flip for the whole batch


def test_rotation_keeps_shape_range_and_varies_per_image():
    x = np.repeat(images(1), 6, axis=0)
    out = build_augmenter(augment_cfg(rotation=180, fill_mode="nearest"))(x, rng(2))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert len({round(float(o.sum()), 1) for o in out}) > 1
    assert np.array_equal(x, np.repeat(images(1), 6, axis=0))  # the caller's pixels are left alone


def test_brightness_and_contrast_follow_keras_layers():
    """Like RandomBrightness / RandomContrast (value range 0-255): one shift, one factor about each channel's mean,
    per image, clipped to 0-255."""
    x = np.random.default_rng(3).integers(60, 200, (16, 8, 8, 3)).astype(np.uint8)
    bright = build_augmenter(augment_cfg(brightness=0.2))(x, rng(4))
    assert bright.dtype == np.float32
    shift = bright - x.astype(np.float32)
    per_image = shift.reshape(16, -1)
    assert np.allclose(per_image, per_image[:, :1], atol=1e-3)  # one delta per image (no clipping at 60-200 +-51)
    assert np.abs(per_image[:, 0]).max() <= 0.2 * 255 + 1e-3 and np.ptp(per_image[:, 0]) > 1
    contrast = build_augmenter(augment_cfg(contrast=0.5))(x, rng(5))
    means_in = x.astype(np.float32).mean(axis=(1, 2))
    inside = (contrast > 0) & (contrast < 255)
    assert inside.mean() > 0.9  # clipping aside, each channel keeps its mean and is scaled about it
    assert np.allclose(contrast.mean(axis=(1, 2)), means_in, atol=15)
    ratio = (contrast[:, 0, 0, 0] - means_in[:, 0]) / (x[:, 0, 0, 0] - means_in[:, 0] + 1e-6)
    assert np.all((ratio > 0.45) & (ratio < 1.55))


def test_training_dataset_batches_all_images_with_matching_labels():
    x = np.stack([np.full((8, 8, 3), i, np.uint8) for i in range(10)])
    y = np.arange(10) % 3
    ds = training_batches(x, y, 3, batch_size=4, augment_cfg=augment_cfg(), seed=0)
    assert len(ds) == 3
    seen = []
    for bx, by in ds:
        assert bx.dtype == np.uint8 and by.dtype == np.float32 and by.shape[1] == 3
        for img, onehot in zip(bx, by, strict=True):
            i = int(img[0, 0, 0])
            assert onehot.argmax() == y[i]
            seen.append(i)
    assert sorted(seen) == list(range(10))  # one pass: every image once, the last batch smaller
    ev = np.concatenate(list(eval_dataset(x, 4)))
    assert [int(v) for v in ev[:, 0, 0, 0]] == list(range(10))  # evaluation keeps order
    assert len(list(eval_dataset(x, 4))) == 3  # and can be iterated again (one validation pass per epoch)


def test_steps_per_epoch_gives_full_batches_that_run_on_across_epochs():
    """With steps_per_epoch, batches run through successive shuffled passes: all full (one compiled step on JAX),
    every image once per pass, and a new epoch, or phase, goes on where the last stopped."""
    x = np.stack([np.full((4, 4, 3), i, np.uint8) for i in range(10)])
    ds = training_batches(x, np.zeros(10, int), 2, batch_size=4, augment_cfg=augment_cfg(), seed=1, steps_per_epoch=3)
    ids = []
    for _ in range(5):  # what model.fit does: every batch of the epoch, then on_epoch_end
        for i in range(len(ds)):
            bx, _ = ds[i]
            assert len(bx) == 4
            ids += [int(v) for v in bx[:, 0, 0, 0]]
        ds.on_epoch_end()
    passes = [ids[i : i + 10] for i in range(0, 60, 10)]
    assert all(sorted(p) == list(range(10)) for p in passes)
    assert len({tuple(p) for p in passes}) > 1  # reshuffled every pass
    with pytest.raises(IndexError):
        ds[3]


def test_batches_are_the_same_on_any_thread_in_any_order():
    """A batch depends only on (seed, its position): worker threads cannot change what the model sees."""
    x = images(20, 16, 16)
    cfg = augment_cfg(rotation=90, zoom=0.1, horizontal_flip=True, brightness=0.1)
    first = BatchStream(x, np.arange(20) % 4, 4, 8, cfg, seed=5)
    second = BatchStream(x, np.arange(20) % 4, 4, 8, cfg, seed=5)
    order = [3, 0, 7, 1, 5, 2, 6, 4]
    with ThreadPoolExecutor(4) as pool:
        threaded = dict(zip(order, pool.map(lambda k: second.batch(k * 8, k * 8 + 8), order), strict=True))
    for k in range(8):
        bx, by = first.batch(k * 8, k * 8 + 8)
        assert np.array_equal(bx, threaded[k][0]) and np.array_equal(by, threaded[k][1])
    other_seed = BatchStream(x, np.arange(20) % 4, 4, 8, cfg, seed=6)
    assert not np.array_equal(other_seed.batch(0, 8)[0], first.batch(0, 8)[0])


def test_tensorflow_feed_serves_the_same_batches_and_goes_on_across_iterators():
    """On TensorFlow, tf.data calls the same batches: a second iterator (the next fit() phase) never starts over."""
    pytest.importorskip("tensorflow")
    from dermsweep.data.tf_feed import dataset

    x = images(12, 8, 8)
    stream = BatchStream(x, np.arange(12) % 3, 3, 4, augment_cfg(rotation=30, horizontal_flip=True), seed=2)
    numbered = {bytes(stream.batch(k * 4, k * 4 + 4)[0]): k for k in range(64)}
    ds = dataset(stream)
    served = []
    for _ in range(2):  # two iterators, as two fit() calls make
        for bx, by in ds.take(3):
            k = numbered[bytes(bx.numpy())]  # a batch of the stream (parallel calls may finish out of order)
            assert bx.dtype == np.uint8 and np.array_equal(by.numpy(), stream.batch(k * 4, k * 4 + 4)[1])
            served.append(k)
    assert len(set(served)) == 6  # none served twice


def test_warp_matches_tensorflows_projective_transform():
    """The OpenCV warp reads the matrices as TF's transforms do (output -> input pixel, same pixel centres)."""
    tf = pytest.importorskip("tensorflow")
    aug = build_augmenter(augment_cfg(rotation=180, zoom=0.1, width_shift=0.1, fill_mode="nearest"))
    yy, xx = np.mgrid[0:24, 0:32].astype(np.float32)
    smooth = np.stack([xx * 7, yy * 9, (xx + yy) * 4], axis=-1)[None].repeat(4, axis=0)  # gradients: no aliasing
    mats = aug.matrices(4, 24, 32, rng(3))
    ours = aug.warp(smooth, mats)
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
