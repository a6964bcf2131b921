"""The input pipeline: augmentation geometry and photometry, and the datasets' shapes, order, labels and epochs."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from omegaconf import OmegaConf

from dermsweep.data.augment import DRAWS, build_augmenter
from dermsweep.data.pipeline import BatchStream, eval_dataset, training_batches, training_dataset
from dermsweep.data.stream import uniforms
from helpers.config import compose


def augment_cfg(**over):
    base = OmegaConf.to_container(compose(["augment=none"]).augment)
    return OmegaConf.create({**base, **over})


def images(n=8, h=12, w=16):
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8)


def draws(n, seed=0):
    """Each image's uniforms, as the stream derives them."""
    return np.random.default_rng(seed).random((n, DRAWS))


def test_no_augmentation_is_no_op():
    assert build_augmenter(augment_cfg()) is None


def test_flips_only_mirror_the_image():
    x = images()
    out = build_augmenter(augment_cfg(horizontal_flip=True, vertical_flip=True))(x, draws(len(x), 1))
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
    out = build_augmenter(augment_cfg(rotation=180, fill_mode="nearest"))(x, draws(6, 2))
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert len({round(float(o.sum()), 1) for o in out}) > 1
    assert np.array_equal(x, np.repeat(images(1), 6, axis=0))  # the caller's pixels are left alone


def test_brightness_and_contrast_follow_keras_layers():
    """Like RandomBrightness / RandomContrast (value range 0-255): one shift, one factor about each channel's mean,
    per image, clipped to 0-255."""
    x = np.random.default_rng(3).integers(60, 200, (16, 8, 8, 3)).astype(np.uint8)
    bright = build_augmenter(augment_cfg(brightness=0.2))(x, draws(16, 4))
    assert bright.dtype == np.float32
    shift = bright - x.astype(np.float32)
    per_image = shift.reshape(16, -1)
    assert np.allclose(per_image, per_image[:, :1], atol=1e-3)  # one delta per image (no clipping at 60-200 +-51)
    assert np.abs(per_image[:, 0]).max() <= 0.2 * 255 + 1e-3 and np.ptp(per_image[:, 0]) > 1
    contrast = build_augmenter(augment_cfg(contrast=0.5))(x, draws(16, 5))
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


def test_tensorflow_feed_serves_the_stream_in_order_from_the_phases_first_epoch():
    """On TensorFlow, tf.data calls the same batches, in order; each phase's dataset starts at its first epoch's
    batches, whatever an earlier iterator prefetched (that shifted the second phase's batches by thread timing)."""
    pytest.importorskip("tensorflow")
    from dermsweep.data.tf_feed import dataset

    x = images(12, 8, 8)
    stream = BatchStream(x, np.arange(12) % 3, 3, 4, augment_cfg(rotation=30, horizontal_flip=True), seed=2)
    for first in (0, 7):
        ds = dataset(stream, first_batch=first)
        for _ in range(2):  # two iterators: both start at the same batch
            for k, (bx, by) in enumerate(ds.take(5), start=first):
                want_x, want_y = stream.batch(k * 4, k * 4 + 4)
                assert bx.dtype == np.uint8
                assert np.array_equal(bx.numpy(), want_x) and np.array_equal(by.numpy(), want_y)


def test_feed_gives_every_backend_the_same_epochs():
    """TrainingFeed.from_epoch(e): batch i of epoch e is stream batch e * steps + i on TensorFlow (tf.data) and
    elsewhere (the PyDataset), so the next phase continues the stream where the epochs say, never where a
    prefetch happened to stop."""
    pytest.importorskip("tensorflow")
    from dermsweep.data.pipeline import TrainingBatches
    from dermsweep.data.tf_feed import dataset

    x = images(10, 8, 8)
    feed = training_dataset(x, np.arange(10) % 2, 2, 4, augment_cfg(zoom=0.2), seed=3, steps_per_epoch=3)
    tf_batches = list(dataset(feed.stream, first_batch=2 * 3).take(3))  # what from_epoch(2) gives on TensorFlow
    py_batches = TrainingBatches(feed.stream, 3, workers=2)  # and on JAX and PyTorch
    py_batches.epoch = 2
    for i in range(3):
        want = feed.stream.batch((6 + i) * 4, (6 + i) * 4 + 4)[0]
        assert np.array_equal(py_batches[i][0], want) and np.array_equal(tf_batches[i][0].numpy(), want)


def test_augmentation_is_keyed_by_seed_pass_and_image_not_by_batch():
    """An image's augmentation depends on (seed, pass, image index) only: the same in a batch of 2 or of 5,
    different in the next pass and with another seed."""
    x = images(10, 16, 16)
    cfg = augment_cfg(rotation=90, zoom=0.2, horizontal_flip=True, brightness=0.2)
    small, large = BatchStream(x, np.zeros(10, int), 2, 2, cfg, seed=4), BatchStream(x, np.zeros(10, int), 2, 5, cfg, 4)
    by_small = np.concatenate([small.batch(s, s + 2)[0] for s in range(0, 10, 2)])
    by_large = np.concatenate([large.batch(s, s + 5)[0] for s in range(0, 10, 5)])
    assert np.array_equal(by_small, by_large)
    in_image_order = by_large[np.argsort(large._perm(0))]
    next_pass = large.batch(10, 20)[0][np.argsort(large._perm(1))]
    assert not np.array_equal(next_pass, in_image_order)
    other = BatchStream(x, np.zeros(10, int), 2, 5, cfg, seed=5)
    assert not np.array_equal(other.batch(0, 10)[0][np.argsort(other._perm(0))], in_image_order)


def test_stateless_uniforms_are_uniform_and_keyed():
    keys = np.stack([np.zeros(20000, int), np.arange(20000) // 100, np.arange(20000) % 100], axis=1)
    u = uniforms(7, keys, DRAWS)
    assert u.shape == (20000, DRAWS) and u.min() >= 0 and u.max() < 1
    assert abs(u.mean() - 0.5) < 0.01 and abs(u.var() - 1 / 12) < 0.005
    assert abs(np.corrcoef(u[:, 0], u[:, 1])[0, 1]) < 0.03  # the columns are not one number repeated
    assert np.array_equal(uniforms(7, keys[5:9], DRAWS), u[5:9])  # a row depends on its key, not its neighbours
    assert not np.array_equal(uniforms(8, keys[:4], DRAWS), u[:4])


def test_warp_matches_tensorflows_projective_transform():
    """The OpenCV warp reads the matrices as TF's transforms do (output -> input pixel, same pixel centres)."""
    tf = pytest.importorskip("tensorflow")
    aug = build_augmenter(augment_cfg(rotation=180, zoom=0.1, width_shift=0.1, fill_mode="nearest"))
    yy, xx = np.mgrid[0:24, 0:32].astype(np.float32)
    smooth = np.stack([xx * 7, yy * 9, (xx + yy) * 4], axis=-1)[None].repeat(4, axis=0)  # gradients: no aliasing
    mats = aug.matrices(24, 32, draws(4, 3))
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
