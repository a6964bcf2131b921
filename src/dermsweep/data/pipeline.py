"""The input pipeline over decoded images held in memory, the same on every Keras backend.

Images are decoded and resized once (pixels.py). Training batches are a pure function of (seed, batch number)
(`BatchStream`): shuffle indices, gather, augment the whole batch in NumPy/OpenCV (augment.py). They stay uint8
pixels unless brightness or contrast augmentation makes them float32: the model's float32 input casts them on its
device, so a quarter of the bytes cross the queue and, on a GPU, the bus. JAX and PyTorch get them through a
`keras.utils.PyDataset` whose worker threads build the next batches while the model trains (OpenCV and NumPy
release the GIL); TensorFlow through tf.data calling the same batch function (tf_feed.py).

Two ways to cut epochs:
- steps_per_epoch=N (training): epochs of N full batches from an endless stream of shuffled passes over the data,
  so a batch may span two passes and every batch has the same shape (one compiled step on JAX; even shards for data
  parallelism). The next epoch, and the next training phase, go on in the stream: no batch is served twice
  (a few that Keras prefetched and dropped at an epoch's or a fit's end are skipped or served later).
- steps_per_epoch=None: each epoch is one shuffled pass over the data, the last batch smaller.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator

import keras
import numpy as np

from .augment import build_augmenter

# Domains of the seeds drawn from (seed, domain, number): the shuffle of a pass and the augmentation of a batch.
_SHUFFLE, _AUGMENT = 0, 1


class BatchStream:
    """Shuffled, augmented batches of (x, y): `batch(start, stop)` holds stream positions start..stop-1, where
    position p is image perm(p // n)[p % n] of pass p // n. Deterministic: the same batch on any thread or backend."""

    def __init__(self, x: np.ndarray, y: np.ndarray, num_classes: int, batch_size: int, augment_cfg, seed: int):
        self.x, self.batch_size, self.seed = x, int(batch_size), int(seed)
        self.labels = np.eye(num_classes, dtype=np.float32)[y]
        self.augmenter = build_augmenter(augment_cfg)
        self._perms: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.x)

    def _perm(self, n_pass: int) -> np.ndarray:
        with self._lock:  # worker threads share it; two passes are live at most at a pass boundary
            perm = self._perms.get(n_pass)
            if perm is None:
                perm = np.random.default_rng([self.seed, _SHUFFLE, n_pass]).permutation(len(self.x))
                self._perms = {p: v for p, v in self._perms.items() if p >= n_pass - 1}
                self._perms[n_pass] = perm
            return perm

    def batch(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.x)
        positions = np.arange(start, stop)
        passes = positions // n
        idx = np.empty(len(positions), dtype=np.int64)
        for p in np.unique(passes):
            mask = passes == p
            idx[mask] = self._perm(int(p))[positions[mask] % n]
        images = self.x[idx]
        if self.augmenter is not None:
            images = self.augmenter(images, np.random.default_rng([self.seed, _AUGMENT, start]))
        return images, self.labels[idx]

    def epoch_batch(self, epoch: int, i: int, steps_per_epoch: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Batch i of epoch `epoch` (both from 0), epochs cut as the module docstring says."""
        b, n = self.batch_size, len(self.x)
        if steps_per_epoch:
            start = (epoch * steps_per_epoch + i) * b
            return self.batch(start, start + b)
        start = epoch * n + i * b
        return self.batch(start, min(start + b, (epoch + 1) * n))


class TrainingBatches(keras.utils.PyDataset):
    """The Keras face of a BatchStream: `workers` threads prepare batches ahead of the training step."""

    def __init__(self, stream: BatchStream, steps_per_epoch: int | None, workers: int):
        # Threads, not processes: the work releases the GIL, and processes would copy the images.
        super().__init__(workers=max(1, int(workers)), use_multiprocessing=False, max_queue_size=max(4, 2 * workers))
        self.stream, self.steps = stream, steps_per_epoch
        self.epoch = 0  # epochs finished: counts on across fit() calls, so a new phase does not replay the first

    def __len__(self) -> int:
        return self.steps or math.ceil(len(self.stream) / self.stream.batch_size)

    def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
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


def training_dataset(
    x: np.ndarray,
    y: np.ndarray,
    num_classes: int,
    batch_size: int,
    augment_cfg,
    seed: int,
    steps_per_epoch: int,
    workers: int = 2,
):
    """What model.fit reads best on the running backend, for epochs of `steps_per_epoch` full batches: a tf.data
    pipeline over the same batches on TensorFlow (tf_feed.py says why), the PyDataset elsewhere."""
    batches = training_batches(x, y, num_classes, batch_size, augment_cfg, seed, steps_per_epoch, workers)
    if keras.backend.backend() == "tensorflow":
        from .tf_feed import dataset

        return dataset(batches.stream)
    return batches


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
