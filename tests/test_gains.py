"""Evaluation-time gains: test-time views, temperature scaling, prior adjustment and the operating point, chosen on
validation and carried by the shipped Keras model (which must compute exactly what the run scored)."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf

from dermsweep.evaluation import calibration
from dermsweep.evaluation.metrics import scores
from dermsweep.keras_layers import DihedralView
from dermsweep.training import gains as g
from dermsweep.training.model import logits_of
from dermsweep.views import VIEWS
from helpers.models import images, tiny_classifier
from helpers.predictions import K


def test_views_are_the_eight_symmetries_of_the_image_and_keras_agrees_with_numpy():
    x = images(2)
    expected = []
    for k in range(4):
        r = np.rot90(x, k, axes=(1, 2))
        expected += [r, r[:, :, ::-1]]
    got = [g.view_pixels(x, v) for v in VIEWS["dihedral"]]
    assert len({a.tobytes() for a in got}) == 8  # all distinct
    assert {a.tobytes() for a in got} == {e.tobytes() for e in expected}  # and exactly the dihedral group
    assert VIEWS["flips"] == VIEWS["dihedral"][:4] and all(g.view_pixels(x, v).shape == x.shape for v in VIEWS["flips"])
    for view in VIEWS["dihedral"]:
        layer = np.asarray(DihedralView(*view)(x.astype(np.float32)))
        np.testing.assert_array_equal(layer, g.view_pixels(x, view).astype(np.float32))


def test_temperature_and_prior_fits_recover_what_made_the_data():
    rng = np.random.default_rng(0)
    n = 4000
    true_logits = rng.normal(0, 1.5, (n, K))
    p = calibration.adjust(true_logits)
    y = np.array([rng.choice(K, p=row) for row in p])  # labels drawn from the true probabilities: calibrated
    overconfident = 3.0 * true_logits  # a model three times too sure of itself
    t = calibration.fit_temperature(y, overconfident)
    assert t == pytest.approx(3.0, rel=0.1)
    assert calibration.nll(y, calibration.adjust(overconfident, t)) < calibration.nll(
        y, calibration.adjust(overconfident)
    )
    # Calibration never changes a decision.
    assert (calibration.adjust(overconfident, t).argmax(1) == overconfident.argmax(1)).all()
    # A model biased towards class 5 by log(prior): tau = 1 removes it (balanced accuracy recovers).
    priors = np.array([0.03, 0.05, 0.11, 0.01, 0.11, 0.67, 0.02])
    biased = true_logits + np.log(priors)

    def bal(yy, p):
        return scores(yy, p)["balanced_accuracy"]

    tau = calibration.fit_prior_tau(y, biased, priors, 1.0, bal)
    assert 0.6 <= tau <= 1.4
    adjusted = calibration.adjust(biased, 1.0, calibration.prior_bias(priors, tau))
    assert bal(y, adjusted) > bal(y, calibration.adjust(biased)) + 0.1
    # With a tolerance: the smallest |tau| within it of the best (never further from 0, never below best - tolerance).
    best = bal(y, adjusted)
    gentle = calibration.fit_prior_tau(y, biased, priors, 1.0, bal, tolerance=0.02)
    assert 0 <= gentle <= tau
    assert bal(y, calibration.adjust(biased, 1.0, calibration.prior_bias(priors, gentle))) >= best - 0.02


def _cfg(views="auto", calibrate=True, prior=True, point=True):
    return OmegaConf.create(
        {
            "views": views,
            "calibrate": calibrate,
            "prior_adjustment": prior,
            "operating_point": {"class_name": "mel", "sensitivity": 0.8} if point else None,
        }
    )


def test_choices_are_made_on_validation_and_the_cheaper_view_set_wins_a_tie():
    rng = np.random.default_rng(1)
    n = 700
    y = rng.integers(0, K, n)
    base = rng.normal(0, 1, (n, K))
    base[np.arange(n), y] += 1.0
    # Each view sees the truth through its own noise: averaging views helps; quarter turns add nothing new here.
    views = {v: base + rng.normal(0, 1.5, (n, K)) for v in VIEWS["flips"]}
    views.update(dict.fromkeys(VIEWS["dihedral"][4:], views[0, False]))
    names = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    priors = np.full(K, 1 / K)
    chosen = g.choose_gains(_cfg(), y, views, priors, names, "val_balanced_accuracy")
    assert chosen.view_scores["flips"] > chosen.view_scores["none"]
    assert chosen.views == "flips"  # dihedral only repeats views here: no better, so the cheaper set
    # The choice is logged with its evidence: flips clearly beat no views in the paired bootstrap.
    flips = next(e for e in chosen.evidence if e["key"] == "views_flips")
    assert flips["taken"] and flips["p_better"] >= 0.9 and flips["lo"] > 0
    # Views that add only noise are not bought, though they score higher on these images.
    jitter = {v: views[0, False] + rng.normal(0, 0.02, (n, K)) * (v != (0, False)) for v in VIEWS["dihedral"]}
    noisy = g.choose_gains(_cfg(), y, jitter, priors, names, "val_balanced_accuracy")
    assert noisy.views == "none" and not any(e["taken"] for e in noisy.evidence if e["key"].startswith("views"))
    # gain_confidence 0: any gain on the validation images is taken (the old point rule).
    cfg = _cfg()
    cfg.gain_confidence = 0.0
    best = max(noisy.view_scores, key=lambda name: (noisy.view_scores[name], -len(VIEWS[name])))
    assert g.choose_gains(cfg, y, jitter, priors, names, "val_balanced_accuracy").views == best
    point = chosen.operating_point
    assert point is not None and point.class_name == "mel" and point.val_sensitivity >= 0.8
    probs = g.probabilities(chosen, views)
    assert np.mean(probs[y == 4, 4] >= point.threshold) >= 0.8
    fixed = g.choose_gains(
        _cfg(views="none", calibrate=False, prior=False, point=False), y, views, priors, names, "val_balanced_accuracy"
    )
    assert (fixed.views, fixed.temperature, fixed.bias, fixed.operating_point) == ("none", 1.0, None, None)


@pytest.mark.parametrize("views", ["none", "flips", "dihedral"])
def test_shipped_model_computes_what_the_run_scored_and_survives_saving(views, tmp_path):
    clf = tiny_classifier()
    x = images(6, 12, 16)
    head = logits_of(clf)
    per_view = g.per_view(lambda a: np.asarray(head(a.astype(np.float32))), x, VIEWS["dihedral"])
    gains = g.Gains(views=views, temperature=1.7, bias=[0.1, -0.2, 0.0, 0.3, 0.5, -0.9, 0.2])
    shipped = g.wrap([clf], 12, 16, gains)
    expected = g.probabilities(gains, per_view)
    g.check(shipped, x, expected, tolerance=1e-5)
    assert shipped.count_params() == clf.count_params()  # views share the classifier's weights
    path = tmp_path / "shipped.keras"
    shipped.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(np.asarray(reloaded(x.astype(np.float32))), expected, atol=1e-5)


def test_an_ensemble_averages_its_members_logits():
    a, b = tiny_classifier(0), tiny_classifier(1)
    b.name = "member_1"
    x = images(4, 12, 16)
    gains = g.Gains(views="flips")
    logits = {}
    for member in (a, b):
        head = logits_of(member)
        for view, value in g.per_view(lambda z, h=head: np.asarray(h(z.astype(np.float32))), x, VIEWS["flips"]).items():
            logits.setdefault(view, []).append(value)
    mean = {view: np.mean(v, axis=0) for view, v in logits.items()}
    g.check(g.wrap([a, b], 12, 16, gains), x, g.probabilities(gains, mean), tolerance=1e-5)


def test_shipped_model_converts_to_tflite_with_the_same_numbers(tmp_path):
    tf = pytest.importorskip("tensorflow")
    clf = tiny_classifier()
    gains = g.Gains(views="dihedral", temperature=1.3, bias=[0.0, 0.1, 0.0, 0.2, 0.4, -0.5, 0.0])
    shipped = g.wrap([clf], 12, 16, gains)
    x = images(3, 12, 16).astype(np.float32)
    flat = tf.lite.TFLiteConverter.from_keras_model(shipped).convert()
    interpreter = tf.lite.Interpreter(model_content=flat)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    for i in range(len(x)):
        interpreter.set_tensor(inp["index"], x[i : i + 1])
        interpreter.invoke()
        np.testing.assert_allclose(
            interpreter.get_tensor(out["index"])[0], np.asarray(shipped(x[i : i + 1]))[0], atol=1e-5
        )
