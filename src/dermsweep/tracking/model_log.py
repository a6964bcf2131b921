"""Logging a trained Keras model into the active run, in the form every consumer (promotion, export, predict,
serve, web) reads back: MLflow's Keras 3 flavour under the name `run_format.MODEL`, with its signature and metadata.

The flavour (`mlflow.keras`) saves the backend-neutral `.keras` file, so a model trained on JAX or PyTorch loads on
any backend, export's TensorFlow included; its MLmodel records the backend it was trained on. Runs logged before
used `mlflow.tensorflow` (the same `.keras` file under data/): shipping.model_ref reads both.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import run_format
from .artifacts import log_json

# The framework each Keras backend runs on: what a logged model needs installed beside keras to load.
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def log_keras_model(model: Any, example: np.ndarray, info: dict) -> None:
    """The Keras model with its signature (input and output schema) and metadata (class names, input size...).

    No input example: for an image it is ~1 MB of JSON, and MLflow reloads the saved model to check it serves
    (2-4 s per run, a tenth of a short trial). The tests load logged models through pyfunc and predict instead.
    """
    import keras
    import mlflow.keras
    from mlflow.models import infer_signature

    example = example.astype(np.float32)
    probs = np.asarray(keras.ops.convert_to_numpy(model(example, training=False)), dtype=np.float32)
    signature = infer_signature(example, probs)
    # Explicit requirements: inferring them imports the model in a subprocess (~15 s per run on 2 cores).
    mlflow.keras.log_model(
        model, name=run_format.MODEL, signature=signature, metadata=info, pip_requirements=requirements()
    )
    log_json(info, run_format.MODEL_INFO)


def requirements() -> list[str]:
    """keras, the running backend's framework (tensorflow-cpu where that is what is installed), numpy, pillow."""
    from importlib.metadata import PackageNotFoundError, version

    import keras

    package = BACKEND_PACKAGES[keras.backend.backend()]
    candidates = ["tensorflow-cpu", "tensorflow"] if package == "tensorflow" else [package]
    pinned = []
    for dist in candidates:
        try:
            pinned.append(f"{dist}=={version(dist)}")
            break
        except PackageNotFoundError:
            continue
    return [f"keras=={keras.__version__}", *pinned, "numpy", "pillow"]
