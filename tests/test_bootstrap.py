"""evaluation.bootstrap: intervals that agree with the metrics they bound, repeat from a seed, widen when lesions
repeat, and a paired difference that tells a real gain from noise (images and, when given, training seeds)."""

from __future__ import annotations

import numpy as np
import pytest

from dermsweep.evaluation import bootstrap as bs
from dermsweep.evaluation.metrics import METRICS, score, scores
from helpers.predictions import K, probs_of, real_shaped


def test_values_are_the_metrics_and_intervals_repeat_from_the_seed():
    y, lesions, look, rng = real_shaped()
    probs = probs_of(y, lesions, look, rng, 1.5)
    probs[:40] = np.round(probs[:40], 1)  # ties: AUC counts them half, as scikit-learn does
    point = bs.Operating(4, "mel", 0.3)
    found = bs.intervals(y, probs, lesions, metrics=tuple(bs.DIRECTIONS), operating=point, resamples=300)
    expected = scores(y, probs)
    for name in bs.DIRECTIONS:
        assert found[name].value == pytest.approx(expected[name], abs=1e-9), name
        assert found[name].lo <= found[name].value <= found[name].hi, name
    flagged, mel = probs[:, 4] >= 0.3, y == 4
    assert found["mel_sensitivity"].value == pytest.approx(flagged[mel].mean())
    assert found["mel_specificity"].value == pytest.approx((~flagged[~mel]).mean())
    again = bs.intervals(y, probs, lesions, metrics=tuple(bs.DIRECTIONS), operating=point, resamples=300)
    assert again == found
    other = bs.intervals(y, probs, lesions, resamples=300, seed=bs.SEED + 1)
    assert other["balanced_accuracy"] != found["balanced_accuracy"]
    # The logged names follow the shared convention.
    assert set(bs.bounds_metrics("test/macro_f1", found["macro_f1"])) == {"test/macro_f1_lo95", "test/macro_f1_hi95"}


def test_one_metric_alone_is_what_all_of_them_give_and_an_unknown_one_is_named():
    y, lesions, look, rng = real_shaped()
    probs = probs_of(y, lesions, look, rng, 1.5)
    everything = scores(y, probs)
    assert set(everything) == set(METRICS)
    for name in METRICS:
        assert score(name, y, probs) == everything[name], name
    with pytest.raises(ValueError, match="no metric 'f1'.*macro_f1"):
        score("f1", y, probs)


def test_resampling_by_lesion_is_wider_than_by_image_when_lesions_repeat():
    y, lesions, look, rng = real_shaped(images_per_lesion=3.0)
    probs = probs_of(y, lesions, look, rng, 1.5, noise=0.1)  # a lesion's images are nearly one piece of evidence
    by_image = bs.intervals(y, probs, None, resamples=500)["balanced_accuracy"]
    by_lesion = bs.intervals(y, probs, lesions, resamples=500)["balanced_accuracy"]
    assert by_lesion.hi - by_lesion.lo > 1.2 * (by_image.hi - by_image.lo)


def test_paired_difference_tells_a_real_gain_from_noise():
    y, lesions, look, rng = real_shaped()
    champion = probs_of(y, lesions, look, rng, 1.5)
    same = bs.paired(y, champion, champion, "balanced_accuracy", lesions, resamples=500)
    assert same.difference == 0 and same.p_better == 0 and not bs.clearly_better(same, 0.9)
    # A few predictions moved at random: a point difference, but within the noise.
    jitter = np.log(champion) + rng.normal(0, 0.15, champion.shape)
    jittered = np.exp(jitter) / np.exp(jitter).sum(axis=1, keepdims=True)
    noise = bs.paired(y, jittered, champion, "balanced_accuracy", lesions, resamples=500)
    assert noise.lo < 0 < noise.hi and not bs.clearly_better(noise, 0.9)
    # A better model on the same images: clearly better, and the interval says by how much.
    better = probs_of(y, lesions, look, np.random.default_rng(7), 3.0)
    gain = bs.paired(y, better, champion, "balanced_accuracy", lesions, resamples=500)
    assert gain.lo > 0 and gain.p_better >= 0.99 and bs.clearly_better(gain, 0.9)
    assert gain.describe().startswith("+") and "points [" in gain.describe()
    # For a loss, lower is better.
    loss = bs.paired(y, better, champion, "loss", lesions, resamples=500)
    assert loss.direction == "minimize" and loss.difference < 0 and loss.p_better >= 0.99


def test_training_noise_widens_a_paired_difference_that_resampling_images_calls_certain():
    """Two trainings of one config differ on the same images by more than the image bootstrap allows (seeds 1 and 3
    of the real search: +2.3 [+0.6, +4.1], P 0.995); each run's seed noise, added to both sides, says so."""
    y, lesions, look, rng = real_shaped()
    champion = probs_of(y, lesions, look, rng, 1.5)
    candidate = champion.copy()
    fixed = np.flatnonzero(candidate.argmax(axis=1) != y)[:30]  # 30 wrong images made right: +3.7 points
    candidate[fixed] = np.eye(K)[y[fixed]] * 0.9 + 0.1 / K
    images = bs.paired(y, candidate, champion, "balanced_accuracy", lesions, resamples=500)
    assert images.training_sd == 0 and images.training_dof is None and bs.clearly_better(images, 0.9)
    seeds = bs.paired(y, candidate, champion, "balanced_accuracy", lesions, resamples=500, training_sd=0.02)
    assert seeds.difference == images.difference and seeds.training_sd == 0.02
    assert seeds.lo < images.lo and seeds.hi > images.hi and seeds.lo < 0 < seeds.hi
    assert seeds.p_better < 0.9 and not bs.clearly_better(seeds, 0.9)
    # Repeatable; an sd estimated from few runs (Student's t) is wider than a known one (normal).
    assert bs.paired(y, candidate, champion, "balanced_accuracy", lesions, resamples=500, training_sd=0.02) == seeds
    few = bs.paired(
        y, candidate, champion, "balanced_accuracy", lesions, resamples=500, training_sd=0.02, training_dof=2
    )
    assert few.hi - few.lo > seeds.hi - seeds.lo and few.training_dof == 2
    with pytest.raises(ValueError, match="training noise -0.01: a standard deviation"):
        bs.paired(y, candidate, champion, "balanced_accuracy", training_sd=-0.01)


def test_bad_input_is_refused_with_a_clear_error():
    with pytest.raises(ValueError, match="3 labels but predictions of shape"):
        bs.intervals(np.zeros(3, int), np.ones((4, K)) / K)
    with pytest.raises(ValueError, match="2 group ids for 3 images"):
        bs.intervals(np.zeros(3, int), np.ones((3, K)) / K, groups=["a", "b"])
    with pytest.raises(ValueError, match="no resampled form"):
        bs.paired(np.zeros(3, int), np.ones((3, K)) / K, np.ones((3, K)) / K, "f2")
