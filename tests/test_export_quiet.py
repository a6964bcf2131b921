"""Export and TFLite prediction keep TensorFlow Lite's and onnxruntime's own lines off the terminal: no stray
"Created TensorFlow Lite XNNPACK delegate" line, no onnxruntime warning listing TF op names."""

from __future__ import annotations

import os

import numpy as np
import pytest


def test_tflite_runner_prints_no_xnnpack_line(tmp_path, capfd):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import tensorflow as tf

    from dermsweep.shipping.predict import TFLiteRunner

    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(inputs)))
    path = tmp_path / "tiny.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    capfd.readouterr()
    runner = TFLiteRunner(path, num_threads=1)
    probs = runner(np.zeros((8, 8, 3), np.uint8))
    out, err = capfd.readouterr()
    assert probs.shape == (7,)
    assert "XNNPACK" not in out + err and "INFO:" not in out + err, out + err


def test_onnx_sessions_log_errors_only(monkeypatch):
    ort = pytest.importorskip("onnxruntime")
    from dermsweep.shipping import converters

    seen = {}

    def session(path, opts, providers):
        seen["severity"] = opts.log_severity_level
        return object()

    monkeypatch.setattr(ort, "InferenceSession", session)
    converters.onnx_session("model.onnx")
    assert seen["severity"] == 3  # warnings named every unused initializer by its TF op name
