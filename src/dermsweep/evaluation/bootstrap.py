"""95% bootstrap intervals of the headline metrics, and the paired bootstrap of two models' difference.

Validation and test splits hold 17-21 images of the rarest classes, so a balanced accuracy moves by 2-3 points when
a handful of images change: every figure a choice is made on needs its noise beside it. Resampling is by lesion
when lesion ids are known (HAM10000 has several images of one lesion; they are not independent evidence), else by
image. Every resample is a row of counts (how often each image was drawn), so each metric is a few matrix products
over all resamples at once (2,000 resamples of 1,500 images: well under a second per metric), and a seed makes
it repeat. The paired bootstrap scores two models' predictions on the same images with the same resamples, so what
they share (the hard images, the rare classes' luck) cancels out of their difference. What resampling images cannot
see is training noise (another seed, another model on the same images): `paired` adds it when given its size.

By the shared convention, the interval of a logged metric `X` is logged as `X_lo95` and `X_hi95` (`bounds_metrics`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 20
EPS = 1e-7
# Metrics this module resamples, with the direction that is better (sensitivity and specificity need a class).
DIRECTIONS = {
    "balanced_accuracy": "maximize",
    "macro_f1": "maximize",
    "macro_auc": "maximize",
    "accuracy": "maximize",
    "top2_accuracy": "maximize",
    "loss": "minimize",
}
HEADLINE = ("balanced_accuracy", "macro_f1", "macro_auc")
LO, HI = "_lo95", "_hi95"
# Resample counts are built this many (resample, image) cells at a time: bounded memory for any split size.
CHUNK_CELLS = 4_000_000
# Training-noise draws per image resample (the sum of two small noises needs more draws than either alone).
TRAINING_DRAWS = 10


@dataclass(frozen=True)
class Interval:
    value: float  # on all the images
    lo: float
    hi: float

    def describe(self, digits: int = 3) -> str:
        return f"{self.value:.{digits}f} [{self.lo:.{digits}f}, {self.hi:.{digits}f}]"

    def standard_error(self) -> float:
        """The standard error a normal 95% interval this wide implies (its half width over 1.96)."""
        return (self.hi - self.lo) / (2 * 1.959964)


@dataclass(frozen=True)
class Operating:
    """Sensitivity and specificity of one class: predicted wherever P(class) >= threshold (None: at argmax; an
    array: each row's own threshold, e.g. a cross-validation's rows by their fold's)."""

    class_index: int
    class_name: str
    threshold: float | np.ndarray | None = None


@dataclass(frozen=True)
class PairedDifference:
    """candidate minus reference on the same images: the difference on all of them, its bootstrap mean and
    95% interval, and the share of resamples in which the candidate is better (strictly). With training_sd > 0 the
    interval and share also hold each run's training noise (training_sd per run; Student's t with training_dof
    degrees of freedom when that sd was estimated, else normal)."""

    metric: str
    direction: str
    difference: float
    mean: float
    lo: float
    hi: float
    p_better: float
    n_images: int
    n_groups: int
    training_sd: float = 0.0
    training_dof: int | None = None

    def describe(self) -> str:
        """'+0.8 points [-1.9, +3.4], P=0.71' (points: hundredths of the metric)."""
        return (
            f"{100 * self.difference:+.1f} points [{100 * self.lo:+.1f}, {100 * self.hi:+.1f}], P={self.p_better:.2f}"
        )

    def to_json(self) -> dict:
        return {k: (float(v) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


def bounds_metrics(name: str, interval: Interval) -> dict[str, float]:
    """The two metrics carrying `name`'s interval (finite bounds only: MLflow refuses NaN)."""
    out = {name + LO: interval.lo, name + HI: interval.hi}
    return {k: float(v) for k, v in out.items() if math.isfinite(v)}


def intervals(
    y: np.ndarray,
    probs: np.ndarray,
    groups: Sequence | np.ndarray | None = None,
    metrics: Sequence[str] = HEADLINE,
    operating: Operating | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Interval]:
    """Each metric's value and 95% percentile interval; with `operating`, also `<class>_sensitivity` and
    `<class>_specificity`. `groups`: a lesion id per image (resampled whole), or None (by image)."""
    y, probs = _check(y, probs)
    names = list(metrics) + (
        [f"{operating.class_name}_sensitivity", f"{operating.class_name}_specificity"] if operating else []
    )
    full = _all_metrics(y, probs, np.ones((1, len(y))), metrics, operating)
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for weights in _weights(len(y), groups, resamples, seed):
        for n, values in _all_metrics(y, probs, weights, metrics, operating).items():
            parts[n].append(values)
    out = {}
    for n in names:
        values = np.concatenate(parts[n])
        lo, hi = _percentiles(values)
        out[n] = Interval(float(full[n][0]), lo, hi)
    return out


def paired(
    y: np.ndarray,
    candidate: np.ndarray,
    reference: np.ndarray,
    metric: str,
    groups: Sequence | np.ndarray | None = None,
    direction: str | None = None,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    training_sd: float = 0.0,
    training_dof: int | None = None,
) -> PairedDifference:
    """The paired bootstrap of metric(candidate) - metric(reference): both scored on the same resamples.

    training_sd: how far one run's score moves with its training seed alone (metric units). Each side carries that
    noise independently, so every resampled difference gets a draw of sqrt(2) * training_sd (Student's t with
    training_dof degrees of freedom when the sd was estimated from few runs, normal when None): the interval and P
    then say whether the candidate would still win if both were trained again."""
    if not (math.isfinite(training_sd) and training_sd >= 0):
        raise ValueError(f"training noise {training_sd}: a standard deviation, 0 or more")
    if training_dof is not None and training_dof < 1:
        raise ValueError(f"training noise with {training_dof} degrees of freedom: at least 1")
    y, candidate = _check(y, candidate)
    _, reference = _check(y, reference)
    if candidate.shape != reference.shape:
        raise ValueError(f"paired bootstrap: predictions of shape {candidate.shape} and {reference.shape} differ")
    direction = direction or DIRECTIONS.get(metric, "maximize")
    if direction not in ("maximize", "minimize"):
        raise ValueError(f"direction {direction!r}: maximize or minimize")
    sign = 1.0 if direction == "maximize" else -1.0
    ones = np.ones((1, len(y)))
    difference = float(_metric(metric, y, candidate, ones)[0] - _metric(metric, y, reference, ones)[0])
    diffs = np.concatenate(
        [
            _metric(metric, y, candidate, w) - _metric(metric, y, reference, w)
            for w in _weights(len(y), groups, resamples, seed)
        ]
    )
    diffs = diffs[np.isfinite(diffs)]
    if training_sd > 0 and len(diffs):
        diffs = _with_training_noise(diffs, training_sd, training_dof, seed)
    lo, hi = _percentiles(diffs)
    return PairedDifference(
        metric,
        direction,
        difference,
        float(diffs.mean()) if len(diffs) else math.nan,
        lo,
        hi,
        float(np.mean(sign * diffs > 0)) if len(diffs) else 0.0,
        len(y),
        _n_groups(len(y), groups),
        float(training_sd),
        training_dof if training_sd > 0 else None,
    )


def _with_training_noise(diffs: np.ndarray, sd: float, dof: int | None, seed: int) -> np.ndarray:
    """Each resampled difference plus TRAINING_DRAWS draws of the two runs' training noise (a fixed stream: the same
    inputs give the same interval)."""
    rng = np.random.default_rng([seed, 1])
    shape = (len(diffs), TRAINING_DRAWS)
    draws = rng.standard_normal(shape) if dof is None else rng.standard_t(dof, shape)
    return (diffs[:, None] + math.sqrt(2.0) * sd * draws).ravel()


def clearly_better(d: PairedDifference, confidence: float) -> bool:
    """The candidate beats the reference beyond the noise: better on all the images and in at least `confidence` of
    the resamples (confidence 0: any gain on all the images)."""
    sign = 1.0 if d.direction == "maximize" else -1.0
    return sign * d.difference > 0 and d.p_better >= confidence


# ---------------------------------------------------------------- resampling
def _check(y, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y, dtype=np.int64)
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or len(probs) != len(y) or len(y) == 0:
        raise ValueError(f"bootstrap: {len(y)} labels but predictions of shape {probs.shape}")
    return y, probs


def _codes(n: int, groups) -> np.ndarray:
    if groups is None:
        return np.arange(n)
    groups = np.asarray(groups)
    if len(groups) != n:
        raise ValueError(f"bootstrap: {len(groups)} group ids for {n} images")
    return np.unique(groups.astype(str), return_inverse=True)[1].reshape(-1)


def _n_groups(n: int, groups) -> int:
    return int(_codes(n, groups).max()) + 1


def _weights(n: int, groups, resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of resamples, each (chunk, n): how many times each image was drawn (its lesion's count when grouped).
    The same (n, groups, resamples, seed) give the same resamples, whatever is scored with them."""
    if resamples < 1:
        raise ValueError(f"resamples {resamples}: at least 1")
    codes = _codes(n, groups)
    g = int(codes.max()) + 1
    rng = np.random.default_rng(seed)
    chunk = max(1, CHUNK_CELLS // max(n, g))
    for start in range(0, resamples, chunk):
        c = min(chunk, resamples - start)
        drawn = rng.integers(0, g, (c, g)) + (np.arange(c) * g)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=c * g).reshape(c, g).astype(np.float32)  # exact: small counts
        yield counts if groups is None else counts[:, codes]


def _percentiles(values: np.ndarray) -> tuple[float, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return math.nan, math.nan
    tail = 100 * (1 - LEVEL) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail])
    return float(lo), float(hi)


# ---------------------------------------------------------------- weighted metrics, one value per resample
def _all_metrics(y, probs, weights, metrics, operating) -> dict[str, np.ndarray]:
    out = {m: _metric(m, y, probs, weights) for m in metrics}
    if operating is not None:
        sensitivity, specificity = _rates(y, probs, weights, operating)
        out[f"{operating.class_name}_sensitivity"] = sensitivity
        out[f"{operating.class_name}_specificity"] = specificity
    return out


def _metric(name: str, y: np.ndarray, probs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """metrics.scores' `name` under image weights w (resamples, n): one value per resample (NaN where undefined)."""
    total = w.sum(axis=1)
    pred = probs.argmax(axis=1)
    if name == "accuracy":
        return _ratio(w @ (pred == y).astype(np.float64), total)
    if name == "top2_accuracy":
        top2 = np.argsort(-probs, axis=1)[:, :2]
        return _ratio(w @ (top2 == y[:, None]).any(axis=1).astype(np.float64), total)
    if name == "loss":
        nll = -np.log(np.clip(probs[np.arange(len(y)), y], EPS, 1.0))
        return _ratio(w @ nll, total)
    k = probs.shape[1]
    truth = np.eye(k)[y]  # (n, k)
    if name == "balanced_accuracy":
        per_class = w @ truth
        hits = w @ (truth * (pred == y)[:, None])
        return _mean_where(_ratio(hits, per_class), per_class > 0)
    if name == "macro_f1":
        predicted = np.eye(k)[pred]
        true_positive, n_true, n_predicted = w @ (truth * predicted), w @ truth, w @ predicted
        f1 = _ratio(2 * true_positive, n_true + n_predicted, empty=0.0)
        return _mean_where(f1, n_true > 0)
    if name == "macro_auc":
        return _macro_auc(y, probs, w)
    raise ValueError(f"bootstrap: no resampled form of metric {name!r} (one of {', '.join(DIRECTIONS)})")


def _ratio(num: np.ndarray, den: np.ndarray, empty: float = math.nan) -> np.ndarray:
    return np.divide(num, den, out=np.full(np.shape(num), empty, dtype=np.float64), where=den > 0)


def _mean_where(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    counted = mask.sum(axis=1)
    return _ratio(np.where(mask, values, 0.0).sum(axis=1), counted.astype(np.float64))


def _macro_auc(y: np.ndarray, probs: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted one-vs-rest AUC (Mann-Whitney, ties count half) averaged over the classes that have positives and
    negatives in the resample, as metrics.scores does for the whole set."""
    by_image = np.ascontiguousarray(w.T)  # (n, resamples): the sorts below gather whole rows
    aucs, valid = [], []
    for c in np.unique(y):
        positive = y == c
        if positive.all():
            continue
        order = np.argsort(probs[:, c], kind="stable")
        scores, pos = probs[order, c], positive[order]
        ws = by_image[order]
        negatives = ws * ~pos[:, None]
        below = np.cumsum(negatives, axis=0) - negatives  # negative weight scored strictly lower (no ties)
        new_level = np.r_[True, scores[1:] != scores[:-1]]
        if new_level.all():
            credit = below[pos]
        else:  # ties: an image sees the negatives below its score level, and half of those at it
            starts = np.flatnonzero(new_level)
            level = (np.cumsum(new_level) - 1)[pos]
            credit = below[starts][level] + 0.5 * np.add.reduceat(negatives, starts, axis=0)[level]
        w_pos, w_neg = ws[pos].sum(axis=0), negatives.sum(axis=0)
        aucs.append(_ratio((ws[pos] * credit).sum(axis=0), w_pos * w_neg))
        valid.append((w_pos > 0) & (w_neg > 0))
    if not aucs:
        return np.full(len(w), math.nan)
    return _mean_where(np.stack(aucs, axis=1), np.stack(valid, axis=1))


def _rates(y, probs, w, operating: Operating) -> tuple[np.ndarray, np.ndarray]:
    k = operating.class_index
    flagged = probs.argmax(axis=1) == k if operating.threshold is None else probs[:, k] >= operating.threshold
    positive = y == k
    sensitivity = _ratio(w @ (flagged & positive).astype(np.float64), w @ positive.astype(np.float64))
    specificity = _ratio(w @ (~flagged & ~positive).astype(np.float64), w @ (~positive).astype(np.float64))
    return sensitivity, specificity
