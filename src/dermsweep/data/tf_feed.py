"""TensorFlow's way into a BatchStream: tf.data's parallel map calls the same NumPy/OpenCV batches as the PyDataset
(pipeline.py), so a model trains on the same data on every backend.

On TensorFlow, training keeps tf.data: only the batch function runs in Python, on tf.data's own threads, with the
parallelism tf.data tunes itself, and TensorFlow's prefetch behind it, as before the backends moved to NumPy.
Keras would read the PyDataset itself through one `Dataset.from_generator` thread trading the GIL with its worker
threads and the training loop. On the shared 2 cores both fed a MobileNet as fast as the old all-TensorFlow
pipeline, within the machine's noise, at the same CPU time per epoch (bench/README.md).
"""

from __future__ import annotations

import tensorflow as tf

from .stream import BatchStream

_ENDLESS = 2**62  # batch numbers run on far beyond any training run


def dataset(stream: BatchStream, first_batch: int = 0, deterministic: bool = True) -> tf.data.Dataset:
    """Batches k = first_batch, first_batch + 1, ... of the stream's endless sequence, each full, as (uint8 or
    float32 pixels, targets[, sample weights]). Every iterator starts at first_batch: each fit() phase gets a
    dataset of its own (pipeline.TrainingFeed), so what an earlier iterator prefetched never shifts the batches.
    deterministic=False lets parallel batches finish out of order: the model then sees the same batches in an
    order that depends on thread timing."""
    b = stream.batch_size
    probe = stream.batch(0, b)  # the dtypes and shapes numpy_function must declare: (x, y) or (x, y, weight)

    def load(k):
        parts = tf.numpy_function(
            lambda k: stream.batch(int(k) * b, int(k) * b + b), [k], [p.dtype for p in probe], stateful=False
        )
        return tuple(tf.ensure_shape(part, p.shape) for part, p in zip(parts, probe, strict=True))

    options = tf.data.Options()
    options.deterministic = bool(deterministic)
    numbers = tf.data.Dataset.range(int(first_batch), _ENDLESS)
    return numbers.map(load, num_parallel_calls=tf.data.AUTOTUNE).with_options(options).prefetch(tf.data.AUTOTUNE)
