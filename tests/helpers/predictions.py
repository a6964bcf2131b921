"""Labels, lesion ids and predicted probabilities shaped like a HAM10000 validation split, for the statistics
tests (bootstrap intervals, the promotion gate, ensembles)."""

from __future__ import annotations

import numpy as np

K = 7
# HAM10000's class shares (akiec, bcc, bkl, df, mel, nv, vasc): what a validation split of ~1,400 images holds.
SHARES = np.array([327, 514, 1099, 115, 1113, 6705, 142]) / 10015


def real_shaped(n: int = 1432, signal: float = 1.5, seed: int = 0, images_per_lesion: float = 1.34):
    """Labels with HAM10000's imbalance, lesion ids (some lesions photographed several times: their images share
    the lesion's look), and probabilities from logits with `signal` on the true class."""
    rng = np.random.default_rng(seed)
    n_lesions = int(n / images_per_lesion)
    lesion_label = rng.choice(K, n_lesions, p=SHARES)
    lesion_of = np.sort(np.r_[np.arange(n_lesions), rng.integers(0, n_lesions, n - n_lesions)])
    y = lesion_label[lesion_of]
    lesion_look = rng.normal(0, 1.0, (n_lesions, K))
    return y, lesion_of, lesion_look, rng


def probs_of(y, lesion_of, lesion_look, rng, signal, noise=0.5):
    logits = lesion_look[lesion_of] + rng.normal(0, noise, (len(y), K))
    logits[np.arange(len(y)), y] += signal
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)
