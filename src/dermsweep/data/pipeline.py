"""tf.data input pipeline over decoded images held in memory.

Images are decoded and resized once (see pixels.py); each epoch only shuffles indices, gathers a batch, and
augments the whole batch (augment.py: one affine warp per image), in parallel maps, with prefetch.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .augment import build_augmenter

AUTOTUNE = tf.data.AUTOTUNE


def training_dataset(
    x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int, augment_cfg, seed: int, repeat: bool
) -> tf.data.Dataset:
    images = tf.constant(x)  # uint8: 4x smaller than float; cast per batch
    labels = tf.one_hot(y, num_classes)
    augmenter = build_augmenter(augment_cfg, seed)
    ds = tf.data.Dataset.range(len(x)).shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=False)

    def gather(idx):
        batch = tf.gather(images, idx)  # augment the uint8 pixels: a quarter of the memory traffic of float
        batch = augmenter(batch, training=True) if augmenter is not None else tf.cast(batch, tf.float32)
        return batch, tf.gather(labels, idx)

    opts = tf.data.Options()
    opts.deterministic = False  # let parallel augmentation finish out of order
    return ds.map(gather, num_parallel_calls=AUTOTUNE).with_options(opts).prefetch(AUTOTUNE)


def eval_dataset(x: np.ndarray, batch_size: int) -> tf.data.Dataset:
    images = tf.constant(x)
    ds = tf.data.Dataset.range(len(x)).batch(batch_size)
    return ds.map(lambda idx: tf.cast(tf.gather(images, idx), tf.float32), num_parallel_calls=AUTOTUNE).prefetch(
        AUTOTUNE
    )
