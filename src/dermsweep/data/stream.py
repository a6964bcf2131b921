"""The endless stream of shuffled, augmented training batches that every feed serves (pipeline.py for JAX and
PyTorch, tf_feed.py for TensorFlow).

Everything random in it is a pure function of the run's seed and a position, never of thread scheduling or of the
order in which batches are asked for: the shuffle of pass p comes from (seed, p), and the augmentation of an image
from (seed, pass, image index) through a counter-based hash (`uniforms`), so an image is augmented the same way
whichever batch, batch size, thread or backend serves it.
"""

from __future__ import annotations

import threading

import numpy as np

from .augment import DRAWS, build_augmenter

# Domains of the seeds drawn from (seed, domain, ...): the shuffle of a pass and the augmentation of an image.
_SHUFFLE, _AUGMENT = 0, 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective scramble of uint64 values (Steele et al. 2014)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniforms(seed: int, keys: np.ndarray, count: int) -> np.ndarray:
    """(n, count) float64 uniforms in [0, 1), row i a pure function of (seed, keys[i]): stateless, vectorised
    random numbers. `keys` is (n, m) of non-negative integers."""
    keys = np.asarray(keys, dtype=np.uint64).reshape(len(keys), -1)
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        h = _mix(np.full(len(keys), np.uint64(seed) + _GOLDEN, dtype=np.uint64))
        for column in keys.T:
            h = _mix(h ^ (column + _GOLDEN))
        slots = np.arange(1, count + 1, dtype=np.uint64) * _GOLDEN
        bits = _mix(h[:, None] + slots[None, :])
    return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


class BatchStream:
    """Shuffled, augmented batches of (x, y): `batch(start, stop)` holds stream positions start..stop-1, where
    position p is image perm(p // n)[p % n] of pass p // n. Deterministic: the same batch on any thread or backend.

    y is one-hot unless `targets` gives each image its own target distribution (distillation's soft targets); with
    `weights` (one loss weight per image) batches are (x, y, sample weight)."""

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        num_classes: int,
        batch_size: int,
        augment_cfg,
        seed: int,
        targets: np.ndarray | None = None,
        weights: np.ndarray | None = None,
    ):
        self.x, self.batch_size, self.seed = x, int(batch_size), int(seed)
        self.labels = np.eye(num_classes, dtype=np.float32)[y] if targets is None else targets.astype(np.float32)
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)
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

    def batch(self, start: int, stop: int) -> tuple[np.ndarray, ...]:
        n = len(self.x)
        positions = np.arange(start, stop)
        passes = positions // n
        idx = np.empty(len(positions), dtype=np.int64)
        for p in np.unique(passes):
            mask = passes == p
            idx[mask] = self._perm(int(p))[positions[mask] % n]
        images = self.x[idx]
        if self.augmenter is not None:
            keys = np.stack([np.full(len(idx), _AUGMENT), passes, idx], axis=1)
            images = self.augmenter(images, uniforms(self.seed, keys, DRAWS))
        if self.weights is not None:
            return images, self.labels[idx], self.weights[idx]
        return images, self.labels[idx]

    def epoch_batch(self, epoch: int, i: int, steps_per_epoch: int | None) -> tuple[np.ndarray, ...]:
        """Batch i of epoch `epoch` (both from 0), epochs cut as pipeline.py's docstring says."""
        b, n = self.batch_size, len(self.x)
        if steps_per_epoch:
            start = (epoch * steps_per_epoch + i) * b
            return self.batch(start, start + b)
        start = epoch * n + i * b
        return self.batch(start, min(start + b, (epoch + 1) * n))
