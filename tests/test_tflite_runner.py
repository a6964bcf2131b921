"""TFLiteRunner: batch 1 and batch n, on files with a fixed and with a dynamic (any-size) input.

A classifier from training.model.build takes any input size; its TFLite file says -1 x -1 x -1 x 3 and allocates
1 x 1 x 1 x 3, which the runner once took for the image size (bench/inference.py failed: "Got 150 but expected 1")."""

from __future__ import annotations

import numpy as np
import pytest

from dermsweep.shipping.predict import TFLiteRunner
from dermsweep.timing import median_latency_ms

H, W = 12, 16


def _tflite(tmp_path, spatial):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((*spatial, 3), dtype="float32")
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    model = keras.Model(inputs, outputs)
    path = tmp_path / "model.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return model, path


@pytest.mark.parametrize("spatial", [(H, W), (None, None)], ids=["fixed", "dynamic"])
def test_batch_1_and_batch_n_match_keras(tmp_path, spatial):
    model, path = _tflite(tmp_path, spatial)
    runner = TFLiteRunner(path, num_threads=1)
    assert (runner.height, runner.width) == spatial and runner.num_classes == 3
    x = np.random.default_rng(0).integers(0, 256, (4, H, W, 3)).astype(np.float32)
    expected = np.asarray(model(x))
    np.testing.assert_allclose(runner.predict(x[:1]), expected[:1], atol=1e-5)
    np.testing.assert_allclose(runner.predict(x), expected, atol=1e-5)
    np.testing.assert_allclose(runner(x[2].astype(np.uint8)), expected[2], atol=1e-5)
    assert runner.predict(x[:0]).shape == (0, 3)
    # as export and bench/inference.py time every format: a batch-1 array through predict
    assert median_latency_ms(runner.predict, x[:1], runs=2, warmup=1) > 0


def test_dynamic_input_follows_the_image_size_and_fixed_refuses_another(tmp_path):
    (tmp_path / "dyn").mkdir()
    model, path = _tflite(tmp_path / "dyn", (None, None))
    runner = TFLiteRunner(path)
    big = np.full((2, 2 * H, W + 3, 3), 90, np.float32)
    np.testing.assert_allclose(runner.predict(big), np.asarray(model(big)), atol=1e-5)
    (tmp_path / "fixed").mkdir()
    _, fixed = _tflite(tmp_path / "fixed", (H, W))
    with pytest.raises(ValueError, match=f"takes {H}x{W} images, not {2 * H}x{W + 3}"):
        TFLiteRunner(fixed).predict(big)


def test_wrong_rank_says_which_call_to_use(tmp_path):
    _, path = _tflite(tmp_path, (H, W))
    runner = TFLiteRunner(path)
    with pytest.raises(ValueError, match="use .predict for a batch"):
        runner(np.zeros((1, H, W, 3), np.float32))
    with pytest.raises(ValueError, match=r"takes a batch \(n, H, W, 3\)"):
        runner.predict(np.zeros((H, W, 3), np.float32))
