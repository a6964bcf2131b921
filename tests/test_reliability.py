"""evaluation.reliability: top-label ECE, its per-bin table and the reliability diagram."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from dermsweep.evaluation.reliability import expected_calibration_error, plot_reliability, reliability_table


def two_class(confidences, correct):
    """Labels and (n, 2) probabilities whose top-class probability is `confidences` (class 0 predicted), correct
    where `correct` is true."""
    conf = np.asarray(confidences, dtype=float)
    probs = np.stack([conf, 1 - conf], axis=1)
    y = np.where(np.asarray(correct), 0, 1)
    return y, probs


def naive_ece(y, probs, bins):
    """The textbook definition, one bin at a time: the reference the vectorised version must match."""
    conf, pred = probs.max(1), probs.argmax(1)
    edges = np.linspace(0, 1, bins + 1)
    total = 0.0
    for b in range(bins):
        inside = (conf > edges[b]) & (conf <= edges[b + 1]) if b else (conf <= edges[1])
        if inside.any():
            total += inside.mean() * abs((pred[inside] == y[inside]).mean() - conf[inside].mean())
    return total


def test_ece_of_calibrated_and_overconfident_predictions():
    y, probs = two_class([0.8] * 10, [True] * 8 + [False] * 2)
    assert expected_calibration_error(y, probs) == pytest.approx(0.0, abs=1e-12)
    y, probs = two_class([1.0] * 4, [True, False, True, False])
    assert expected_calibration_error(y, probs) == pytest.approx(0.5)
    # Two bins by hand: 0.9 (2 right of 2: gap 0.1) and 0.6 (0 right of 2: gap 0.6) -> (2*0.1 + 2*0.6) / 4
    y, probs = two_class([0.9, 0.9, 0.6, 0.6], [True, True, False, False])
    assert expected_calibration_error(y, probs, bins=10) == pytest.approx(0.35)


@pytest.mark.parametrize("bins", [1, 5, 15])
def test_ece_matches_the_definition_on_random_predictions(bins):
    rng = np.random.default_rng(bins)
    probs = rng.dirichlet(np.ones(7) * 0.5, size=300)
    y = rng.integers(0, 7, 300)
    assert expected_calibration_error(y, probs, bins) == pytest.approx(naive_ece(y, probs, bins), abs=1e-12)


def test_table_bins_are_half_open_and_json_ready():
    y, probs = two_class([1.0, 0.6, 0.6, 0.55], [True, True, False, True])
    table = reliability_table(y, probs, bins=10)
    assert set(table) == {"edges", "confidence", "accuracy", "count"}
    assert all(len(v) == 10 for v in table.values())
    assert table["edges"][0] == [0.0, 0.1] and table["edges"][-1] == [0.9, 1.0]
    assert sum(table["count"]) == 4
    # 0.6 is the top of (0.5, 0.6]: with 0.55 in bin 5; 1.0 in the last bin
    assert table["count"][5] == 3 and table["count"][9] == 1
    assert table["accuracy"][5] == pytest.approx(2 / 3) and table["confidence"][5] == pytest.approx(1.75 / 3)
    assert table["confidence"][0] is None and table["accuracy"][0] is None and table["count"][0] == 0
    json.loads(json.dumps(table, allow_nan=False))  # no NaN: empty bins are null
    weighted = sum(
        c / 4 * abs(a - f) for c, a, f in zip(table["count"], table["accuracy"], table["confidence"], strict=True) if c
    )
    assert expected_calibration_error(y, probs, bins=10) == pytest.approx(weighted)


def test_bad_inputs_are_refused():
    y, probs = two_class([0.7, 0.8], [True, True])
    with pytest.raises(ValueError, match="labels"):
        expected_calibration_error(y[:1], probs)
    with pytest.raises(ValueError, match="no images"):
        reliability_table(y[:0], probs[:0])
    with pytest.raises(ValueError, match="bin"):
        expected_calibration_error(y, probs, bins=0)


def test_reliability_diagram_has_a_line_per_curve_the_diagonal_and_ece_in_the_legend():
    from matplotlib.figure import Figure

    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(7), size=200)
    y = rng.integers(0, 7, 200)
    sharp = probs**3 / (probs**3).sum(1, keepdims=True)
    fig = plot_reliability({"before": (y, sharp), "after": (y, probs)}, "validation")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    assert len(ax.lines) == 3 and ax.get_title() == "validation"
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[0] == "perfectly calibrated"
    assert labels[1] == f"before (ECE {expected_calibration_error(y, sharp):.3f})"
    assert labels[2].startswith("after (ECE ")
    fig.savefig(io.BytesIO(), format="png")  # renders without pyplot
