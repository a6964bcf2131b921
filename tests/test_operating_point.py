"""evaluation.operating_point: choosing a threshold for a target sensitivity, deciding with it, and carrying it in
a model's metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from dermsweep.errors import DermsweepError
from dermsweep.evaluation.operating_point import (
    OperatingPoint,
    OperatingPointError,
    choose,
    decide,
    sensitivity_specificity,
)

MEL = 1


def with_mel(p_mel, labels):
    """(y, probs) over 3 classes: P(mel) as given, the rest split 2:1 between class 0 and class 2."""
    p = np.asarray(p_mel, dtype=float)
    probs = np.stack([(1 - p) * 2 / 3, p, (1 - p) / 3], axis=1)
    return np.asarray(labels), probs


def test_choose_takes_the_highest_threshold_that_reaches_the_target():
    #            positives (mel)          negatives
    y, probs = with_mel([0.9, 0.8, 0.6, 0.3, 0.1, 0.7, 0.5, 0.2, 0.05], [MEL] * 5 + [0, 2, 0, 2])
    point = choose(y, probs, MEL, "mel", 0.6)  # 3 of 5 positives needed: the third highest, 0.6
    assert point == OperatingPoint("mel", 0.6, 0.6, 0.6, 0.75)
    point = choose(y, probs, MEL, "mel", 0.61)  # 3.05 -> 4 positives: 0.3, which also flags 0.7 and 0.5
    assert (point.threshold, point.val_sensitivity, point.val_specificity) == (0.3, 0.8, 0.5)
    point = choose(y, probs, MEL, "mel", 1.0)  # every positive: the lowest one
    assert point.threshold == 0.1 and point.val_sensitivity == 1.0 and point.val_specificity == 0.25


def test_float_rounding_never_asks_for_one_positive_too_many():
    y, probs = with_mel(np.linspace(0.99, 0.01, 100), [MEL] * 100)
    assert choose(y, probs, MEL, "mel", 0.07).val_sensitivity == pytest.approx(0.07)  # 0.07 * 100 = 7.000000000000001


def test_ties_catch_every_tied_positive_and_count_tied_negatives():
    y, probs = with_mel([0.5, 0.5, 0.5, 0.2, 0.5, 0.1], [MEL, MEL, MEL, MEL, 0, 0])
    point = choose(y, probs, MEL, "mel", 0.5)
    assert point.threshold == 0.5 and point.val_sensitivity == 0.75 and point.val_specificity == 0.5


def test_choose_is_the_highest_such_threshold_on_random_data():
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(7), size=400)
    y = rng.integers(0, 7, 400)
    for target in (0.5, 0.8, 0.95):
        point = choose(y, probs, 4, "mel", target)
        assert point.val_sensitivity >= target
        above = np.nextafter(point.threshold, 1.0)
        assert sensitivity_specificity(y, probs, 4, above)[0] < target
        assert (point.val_sensitivity, point.val_specificity) == sensitivity_specificity(y, probs, 4, point.threshold)


@pytest.mark.parametrize("target", [0, 0.0, -0.1, 1.01, float("nan"), "high", None])
def test_targets_outside_zero_to_one_are_refused(target):
    y, probs = with_mel([0.9, 0.1], [MEL, 0])
    with pytest.raises(OperatingPointError, match=r"target_sensitivity=.*must be in \(0, 1\]"):
        choose(y, probs, MEL, "mel", target)


def test_no_positives_and_bad_indices_are_clear_errors():
    y, probs = with_mel([0.9, 0.1], [0, 2])
    with pytest.raises(OperatingPointError, match="no images of class 'mel' among the 2 labels"):
        choose(y, probs, MEL, "mel", 0.9)
    with pytest.raises(DermsweepError, match="outside the model's 3 classes"):
        choose(y, probs, 3, "x", 0.9)
    with pytest.raises(ValueError, match="labels"):  # an OperatingPointError is a ValueError too
        sensitivity_specificity(y[:1], probs, MEL, 0.5)


def test_rates_are_nan_where_undefined():
    y, probs = with_mel([0.9, 0.2], [MEL, MEL])
    sensitivity, specificity = sensitivity_specificity(y, probs, MEL, 0.5)
    assert sensitivity == 0.5 and np.isnan(specificity)
    sensitivity, specificity = sensitivity_specificity(*with_mel([0.9, 0.2], [0, 0]), MEL, 0.5)
    assert np.isnan(sensitivity) and specificity == 0.5


def test_decide_predicts_the_class_at_the_threshold_and_the_best_other_class_below_it():
    probs = np.array(
        [
            [0.5, 0.3, 0.2],  # P(mel) 0.3 >= 0.25: mel although class 0 is the argmax
            [0.3, 0.2, 0.5],  # below: argmax of the others, class 2
            [0.15, 0.2, 0.65],
            [0.3, 0.45, 0.25],  # mel is the argmax but below a 0.5 threshold: the best other class, 0
        ]
    )
    assert decide(probs, MEL, 0.25).tolist() == [1, 2, 2, 1]
    assert decide(probs, MEL, 0.5).tolist() == [0, 2, 2, 0]
    assert decide(probs, MEL, 0.0).tolist() == [1, 1, 1, 1]
    with pytest.raises(OperatingPointError):
        decide(probs[0], MEL, 0.5)


def test_decide_agrees_with_the_reported_rates():
    rng = np.random.default_rng(5)
    probs = rng.dirichlet(np.ones(7), size=300)
    y = rng.integers(0, 7, 300)
    point = choose(y, probs, 4, "mel", 0.9)
    pred = decide(probs, 4, point.threshold)
    assert np.mean(pred[y == 4] == 4) == point.val_sensitivity
    assert np.mean(pred[y != 4] != 4) == point.val_specificity


def test_metadata_round_trip_and_malformed_points():
    point = OperatingPoint("mel", np.float32(0.25), 0.95, np.float64(0.96), 0.61)
    meta = {"class_names": ["a", "mel"], "operating_point": point.to_meta()}
    assert json.loads(json.dumps(meta))["operating_point"] == point.to_meta()
    assert type(point.to_meta()["threshold"]) is float
    assert OperatingPoint.from_meta(yaml.safe_load(yaml.safe_dump(meta))) == point
    assert OperatingPoint.from_meta({}) is None
    assert OperatingPoint.from_meta(None) is None  # type: ignore[arg-type]
    good = point.to_meta()
    for bad in (
        "mel@0.25",
        {k: v for k, v in good.items() if k != "threshold"},
        dict(good, threshold="high"),
        dict(good, threshold=1.5),
        dict(good, threshold=float("nan")),
        dict(good, class_name=""),
        dict(good, class_name=4),
    ):
        assert OperatingPoint.from_meta({"operating_point": bad}) is None, bad
