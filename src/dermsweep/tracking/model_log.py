"""Logging a trained Keras model into the active run, in the form every consumer (promotion, export, predict,
serve, web) reads back: the Keras flavour under the name `run_format.MODEL`, with its signature and metadata."""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np

from . import run_format
from .artifacts import log_json


def log_keras_model(model: Any, example: np.ndarray, info: dict) -> None:
    """The Keras model with its signature (input and output schema) and metadata (class names, input size...).

    No input example: for an image it is ~1 MB of JSON, and MLflow reloads the saved model to check it serves
    (2-4 s per run, a tenth of a short trial). The tests load logged models through pyfunc and predict instead.
    """
    import keras
    import tensorflow as tf
    from mlflow.models import infer_signature

    example = example.astype(np.float32)
    probs = np.asarray(model(example, training=False), dtype=np.float32)
    signature = infer_signature(example, probs)
    # Explicit requirements: inferring them imports the model in a subprocess (~15 s per run on 2 cores).
    requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", "numpy", "pillow"]
    # The shipped model's own layers travel inside the MLflow model (pickled by value), so MLflow loads it
    # without dermsweep installed.
    import cloudpickle

    from .. import keras_layers

    cloudpickle.register_pickle_by_value(keras_layers)
    mlflow.tensorflow.log_model(
        model,
        name=run_format.MODEL,
        signature=signature,
        metadata=info,
        pip_requirements=requirements,
        custom_objects=keras_layers.custom_objects(),
    )
    log_json(info, run_format.MODEL_INFO)
