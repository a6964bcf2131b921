"""Colour constancy (model.shades_of_gray): the layer divides out an image's light colour, sits inside the model (so
every way of running the model applies it), survives saving and converts to TFLite and ONNX with the same numbers."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from dermsweep.errors import ConfigError
from dermsweep.keras_layers import ShadesOfGray
from dermsweep.training import config
from dermsweep.training.model import build
from dermsweep.training.single_run import run_name
from helpers.config import compose

CAST = np.array([1.25, 1.0, 0.7], np.float32)  # a warm light: more red, less blue


def _scenes(n: int = 3, seed: int = 0) -> np.ndarray:
    """Images dim enough that the cast and its correction never clip."""
    return np.random.default_rng(seed).uniform(10, 150, (n, 12, 16, 3)).astype(np.float32)


def _reference(image: np.ndarray, power: float) -> np.ndarray:
    """Shades of Gray as the ISIC challenge code writes it, one image in NumPy."""
    light = np.power(np.mean(np.power(image / 255.0, power), axis=(0, 1)), 1.0 / power) + 1e-6
    light = light / np.sqrt(np.sum(light**2))
    return np.clip(image / (light * np.sqrt(3.0)), 0, 255)


@pytest.mark.parametrize("power", [1.0, 6.0])
def test_the_light_colour_is_divided_out_and_a_neutral_light_changes_nothing(power):
    layer = ShadesOfGray(power)
    scenes = _scenes()
    corrected = np.asarray(layer(scenes))
    for image, got in zip(scenes, corrected, strict=True):
        np.testing.assert_allclose(got, _reference(image, power), rtol=1e-4, atol=1e-3)
    # The same scenes under a coloured light come out as they do under a neutral one but for one brightness factor
    # per image (the estimate keeps the light's overall strength): the colour cast is gone.
    ratio = np.asarray(layer(scenes * CAST)) / corrected
    np.testing.assert_allclose(ratio, ratio.mean(axis=(1, 2, 3), keepdims=True) * np.ones_like(ratio), rtol=1e-4)
    grey = np.full((1, 8, 8, 3), 90.0, np.float32)
    np.testing.assert_allclose(np.asarray(layer(grey)), grey, rtol=1e-5)
    black = np.zeros((1, 8, 8, 3), np.float32)
    assert np.array_equal(np.asarray(layer(black)), black)  # no division by zero


def _cfg(*overrides: str):
    cfg = compose(
        ["model=mobilenet_v1", "model.weights=null", "model.height=32", "model.width=32", "data=synthetic", *overrides]
    )
    config.validate(cfg)
    return cfg


def test_the_model_carries_it_when_asked_and_only_then(tmp_path):
    plain = build(_cfg().model, 7)  # shades_of_gray: 0, the default
    assert "colour_constancy" not in [layer.name for layer in plain.layers] and "sog" not in run_name(_cfg())
    cfg = _cfg("model.shades_of_gray=6")
    model = build(cfg.model, 7)
    assert model.get_layer("colour_constancy").power == 6.0
    assert model.count_params() == plain.count_params()  # no weights of its own
    assert "sog6" in run_name(cfg)
    scenes = np.random.default_rng(1).uniform(10, 150, (2, 32, 32, 3)).astype(np.float32) * CAST
    model.set_weights(plain.get_weights())  # the same network with the layer in front of it
    expected = np.asarray(model(scenes))
    np.testing.assert_allclose(expected, np.asarray(plain(ShadesOfGray(6.0)(scenes))), atol=1e-5)
    path = tmp_path / "model.keras"
    model.save(path)
    np.testing.assert_allclose(np.asarray(keras.models.load_model(path)(scenes)), expected, atol=1e-5)


@pytest.mark.parametrize("power", ["0.5", "40", "-1", "gray", "true"])
def test_a_power_out_of_range_is_refused_with_the_key_named(power):
    with pytest.raises(
        ConfigError, match=r"model\.shades_of_gray=.*0 = off, else the Shades of Gray power in \[1, 32\]"
    ):
        _cfg(f"model.shades_of_gray={power}")


def test_tflite_and_onnx_compute_what_keras_does(tmp_path):
    tf = pytest.importorskip("tensorflow")
    ort = pytest.importorskip("onnxruntime")
    inputs = keras.Input((12, 16, 3), name="image")
    model = keras.Model(inputs, ShadesOfGray(6.0)(inputs))
    scenes = _scenes(2, seed=2) * CAST
    expected = np.asarray(model(scenes))
    interpreter = tf.lite.Interpreter(model_content=tf.lite.TFLiteConverter.from_keras_model(model).convert())
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    for i in range(len(scenes)):
        interpreter.set_tensor(inp["index"], scenes[i : i + 1])
        interpreter.invoke()
        np.testing.assert_allclose(interpreter.get_tensor(out["index"])[0], expected[i], rtol=1e-4, atol=1e-3)
    model.export(str(tmp_path / "model.onnx"), format="onnx", verbose=False)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"))
    got = session.run(None, {session.get_inputs()[0].name: scenes})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-3)
