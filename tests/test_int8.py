"""int8 that keeps quality (dermsweep.shipping.int8): the quantization debugger's ranking, the layers kept float, the
search on validation, and the shipped graph (test-time views, mean over views, calibrated softmax) in int8."""

from __future__ import annotations

import numpy as np
import pytest

from dermsweep.errors import ConfigError
from dermsweep.shipping import converters as cv
from dermsweep.shipping import int8 as q
from dermsweep.shipping.predict import TFLiteRunner
from dermsweep.training import gains as g
from helpers.models import images, tiny_classifier
from helpers.predictions import K

H, W = 24, 32


@pytest.fixture(scope="module")
def shipped():
    """A shipped model as a run logs it: eight dihedral views, mean of the logits, softmax(logits / T + bias)."""
    gains = g.Gains(views="dihedral", temperature=1.5, bias=[0.1, -0.2, 0.3, 0.0, 0.0, 0.5, -0.1])
    model = g.wrap([tiny_classifier()], H, W, gains)
    calibration = images(40, H, W, seed=1)
    x_val = images(30, H, W, seed=2)
    reference = np.asarray(model.predict_on_batch(x_val.astype(np.float32)))
    return model, calibration, x_val, reference


def test_search_doubles_then_bisects():
    for budget, needed, chosen, tried in [
        (16, 5, 5, [0, 1, 2, 4, 8, 6, 5]),
        (16, 0, 0, [0]),
        (16, 99, 16, [0, 1, 2, 4, 8, 16]),  # never met: the budget
        (12, 9, 9, [0, 1, 2, 4, 8, 12, 10, 9]),
        (0, 3, 0, [0]),
    ]:
        seen: list[int] = []

        def attempt(n: int, needed=needed, seen=seen) -> bool:
            seen.append(n)
            return n >= needed

        assert q.search(attempt, budget) == chosen
        assert seen == tried


def test_layer_names_group_one_layer_across_the_views():
    names = ("shipped", ["classifier_logits", "backbone"])
    a = (
        "shipped_1/classifier_logits_3/backbone_1/conv_pw_13_relu_1/Relu6;"
        "shipped_1/classifier_logits_1/backbone_1/conv_pw_13_bn_1/batchnorm/sub"
    )
    b = "shipped_1/classifier_logits_11/backbone_1/conv_pw_13_relu_1/Relu6;shipped_1/x"
    assert q.layer_name(a, names) == q.layer_name(b, names) == "classifier_logits/backbone/conv_pw_13_relu_1/Relu6"
    assert q.layer_name("shipped_1/view_1_1/transpose", names) == "view_1_1/transpose"
    rows = [
        {"tensor_name": a, "op_name": "CONV_2D", "mean_squared_error": "0.04", "scale": "0.1", "num_elements": "9"},
        {"tensor_name": b, "op_name": "CONV_2D", "mean_squared_error": "0.0", "scale": "0.1", "num_elements": "9"},
        {
            "tensor_name": "shipped_1/view_1_1/transpose",
            "op_name": "TRANSPOSE",
            "mean_squared_error": "0",
            "scale": "1.0",
            "num_elements": "9",
        },
    ]
    layers = q.rank(rows, names)
    assert [layer.name for layer in layers] == [q.layer_name(a, names), "view_1_1/transpose"]
    assert layers[0].nodes == [a, b] and layers[0].rmse_scale == pytest.approx(1.0)  # mean of 2.0 and 0.0
    with pytest.raises(ConfigError):
        q.Int8Options(min_agreement=1.5)


def test_shipped_graph_in_int8_with_layers_kept_float(shipped, tmp_path):
    model, calibration, x_val, reference = shipped
    # Full integer: the views (transpose, reverse) and the calibrated softmax have int8 kernels.
    ctx = cv.Context(calibration, "float")
    full = tmp_path / "full.tflite"
    cv.CONVERTERS["tflite_int8_full"].write(model, full, ctx)
    assert np.abs(TFLiteRunner(full).predict(x_val) - reference).max() < 0.1
    # Selective, two layers kept float as asked: the report names them, the file computes them in float (once per
    # view), the tail after the features stays float, and it still predicts like Keras.
    result = q.quantize(model, calibration, None, q.Int8Options(float_layers=2))
    report = result.report
    kept = [layer["layer"] for layer in report["float_layers"]]
    assert len(kept) == 2 and all(layer["calls"] == 8 for layer in report["float_layers"])
    assert report["ranking"][:2] == report["float_layers"] and report["search"].startswith("none: 2")
    ops = report["float_ops"]
    assert ops.get("SOFTMAX") == 1 and ops.get("FULLY_CONNECTED") == 8  # the float tail: logits .. softmax
    kept_ops = [layer["op"] for layer in report["float_layers"]]
    assert ops.get("CONV_2D", 0) == 8 * kept_ops.count("CONV_2D")
    path = tmp_path / "selective.tflite"
    path.write_bytes(result.model)
    probs = TFLiteRunner(path).predict(x_val)
    assert np.abs(probs - reference).max() < 0.05
    assert np.mean(probs.argmax(1) == reference.argmax(1)) >= 0.9


def test_search_scores_each_candidate_on_validation(shipped, tmp_path):
    model, calibration, x_val, reference = shipped
    # Float's own labels: int8 meets the target with nothing kept float.
    met = q.quantize(
        model, calibration, q.Validation(x_val, reference.argmax(1), reference), q.Int8Options(tolerance=0.05)
    )
    steps = met.report["steps"]
    assert met.report["met"] is True and steps[0]["float_layers"] == 0 and steps[0]["met"]
    assert steps[0]["images"] == len(x_val) and steps[0]["agreement"] >= 0.95 and met.report["float_layers"] == []
    # A reference no int8 file can agree with (another model's answers) and an agreement floor: every candidate is
    # stopped early, none is scored in full, and the budget's layers are shipped, said as not met.
    other = np.roll(reference, 1, axis=1)
    missed = q.quantize(
        model,
        calibration,
        q.Validation(x_val, other.argmax(1), other),
        q.Int8Options(max_float_layers=2, min_agreement=0.99),
        int8_io="int8",
    )
    report = missed.report
    assert report["met"] is False and [s["float_layers"] for s in report["steps"]] == [0, 1, 2]
    assert all(s["images"] < len(x_val) and s["balanced_accuracy"] is None for s in report["steps"])
    assert len(report["float_layers"]) == 2
    path = tmp_path / "int8_io.tflite"
    path.write_bytes(missed.model)
    runner = TFLiteRunner(path)
    assert runner.input["dtype"] == np.int8 and runner.num_classes == K
    assert np.abs(runner.predict(x_val[:3]) - reference[:3]).max() < 0.1


def test_no_candidate_met_ships_the_one_closest_to_float():
    steps = [q.Step(0, 10, 9, 0.9), q.Step(1, 10, 9, 0.9), q.Step(2, 10, 9, 0.9)]
    for step, delta in zip(steps, (-0.03, 0.015, -0.015), strict=True):
        step.delta = delta
    assert q.closest(steps, fallback=2) == 1  # a tie on |delta| goes to fewer layers kept float
    assert q.closest([q.Step(0, 10, 3, 0.5)], fallback=4) == 4  # stopped early: nothing to compare
