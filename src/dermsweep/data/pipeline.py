"""The input pipeline over decoded images held in memory, the same on every Keras backend.

Images are decoded and resized once (pixels.py). Training batches are a pure function of (seed, stream position)
(stream.BatchStream): shuffle indices, gather, augment the whole batch in NumPy/OpenCV (augment.py). They stay uint8
pixels unless brightness or contrast augmentation makes them float32: the model's float32 input casts them on its
device, so a quarter of the bytes cross the queue and, on a GPU, the bus. JAX and PyTorch get them through a
`keras.utils.PyDataset` whose worker threads build the next batches while the model trains (OpenCV and NumPy
release the GIL); TensorFlow through tf.data calling the same batch function (tf_feed.py).

Two ways to cut epochs:
- steps_per_epoch=N (training): epochs of N full batches from an endless stream of shuffled passes over the data,
  so a batch may span two passes and every batch has the same shape (one compiled step on JAX; even shards for data
  parallelism). The next epoch, and the next training phase, go on in the stream: epoch e is always batches
  e * N .. e * N + N - 1 (TrainingFeed.from_epoch), so what a fit() prefetched and dropped changes nothing.
- steps_per_epoch=None: each epoch is one shuffled pass over the data, the last batch smaller.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import keras
import numpy as np

from .stream import BatchStream


class TrainingBatches(keras.utils.PyDataset):
    """The Keras face of a BatchStream: `workers` threads prepare batches ahead of the training step."""

    def __init__(self, stream: BatchStream, steps_per_epoch: int | None, workers: int):
        # Threads, not processes: the work releases the GIL, and processes would copy the images.
        super().__init__(workers=max(1, int(workers)), use_multiprocessing=False, max_queue_size=max(4, 2 * workers))
        self.stream, self.steps = stream, steps_per_epoch
        self.epoch = 0  # epochs finished: counts on across fit() calls, so a new phase does not replay the first

    def __len__(self) -> int:
        return self.steps or math.ceil(len(self.stream) / self.stream.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, ...]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.stream.epoch_batch(self.epoch, i, self.steps)

    def on_epoch_end(self) -> None:
        self.epoch += 1


def training_batches(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    batch_size: int,
    augment_cfg,
    seed: int,
    steps_per_epoch: int | None = None,
    workers: int = 2,
) -> TrainingBatches:
    """Shuffled, augmented (x pixels 0-255, y one-hot) batches as a PyDataset, cut into epochs as the module says."""
    return TrainingBatches(BatchStream(x, y, num_classes, batch_size, augment_cfg, seed), steps_per_epoch, workers)


class TrainingFeed:
    """What fit() trains from: `from_epoch(e)` is what model.fit reads for epochs e, e+1, ... of `steps_per_epoch`
    full batches each. Batch i of epoch e is always stream batch e * steps_per_epoch + i, whatever an earlier fit()
    prefetched and dropped, so a run's batches depend only on its seed and how many epochs it has trained.

    On TensorFlow a tf.data pipeline over the stream (tf_feed.py says why); elsewhere the PyDataset. `deterministic`
    keeps tf.data's parallel batches in order (the PyDataset always serves them in order)."""

    def __init__(self, stream: BatchStream, steps_per_epoch: int, workers: int, deterministic: bool = True):
        self.stream, self.steps, self.workers = stream, int(steps_per_epoch), int(workers)
        self.deterministic = bool(deterministic)

    def from_epoch(self, epoch: int):
        if keras.backend.backend() == "tensorflow":
            from .tf_feed import dataset

            return dataset(self.stream, first_batch=epoch * self.steps, deterministic=self.deterministic)
        batches = TrainingBatches(self.stream, self.steps, self.workers)
        batches.epoch = epoch
        return batches


def training_dataset(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    batch_size: int,
    augment_cfg,
    seed: int,
    steps_per_epoch: int,
    workers: int = 2,
    deterministic: bool = True,
    targets: np.ndarray | None = None,
    weights: np.ndarray | None = None,
) -> TrainingFeed:
    """The training feed for epochs of `steps_per_epoch` full batches (TrainingFeed); `targets` and `weights` as
    BatchStream takes them (distillation's soft targets and per-image class weights)."""
    stream = BatchStream(x, y, num_classes, batch_size, augment_cfg, seed, targets, weights)
    return TrainingFeed(stream, steps_per_epoch, workers, deterministic)


class EvalBatches:
    """float32 batches of `x` in order, for prediction (training.batch_predict); iterable any number of times."""

    def __init__(self, x: np.ndarray, batch_size: int):
        self.x, self.batch_size = x, int(batch_size)

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[np.ndarray]:
        for i in range(0, len(self.x), self.batch_size):
            yield self.x[i : i + self.batch_size].astype(np.float32)


def eval_dataset(x: np.ndarray, batch_size: int) -> EvalBatches:
    return EvalBatches(x, batch_size)
