"""Logging a trained Keras model into the active run, in the form every consumer (promotion, export, predict,
serve, web) reads back: MLflow's Keras 3 flavour under the name `run_format.MODEL`, with its signature and metadata.

The flavour (`mlflow.keras`, with dermsweep's layers as the model's code: tracking.keras_flavor) saves the
backend-neutral `.keras` file, so a model trained on JAX or PyTorch loads on any backend, export's TensorFlow
included; its MLmodel records the backend it was trained on. Runs logged before
used `mlflow.tensorflow` (the same `.keras` file under data/): tracking.model_ref reads both.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import TrackingError
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
    from mlflow.models import Model, infer_signature

    from . import keras_flavor

    example = example.astype(np.float32)
    probs = np.asarray(keras.ops.convert_to_numpy(model(example, training=False)), dtype=np.float32)
    signature = infer_signature(example, probs)
    # Explicit requirements: inferring them imports the model in a subprocess (~15 s per run on 2 cores).
    # mlflow.keras.log_model's own call, through a flavour module that adds the layers' code (keras_flavor.py)
    Model.log(
        artifact_path=None,
        name=run_format.MODEL,
        flavor=keras_flavor,
        flavor_name="mlflow.keras",
        model=model,
        signature=signature,
        metadata=info,
        pip_requirements=requirements(),
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


def save_checkpoint(model: Any, checkpoint: Path) -> None:
    """The trained weights on disk before the model is logged: if logging fails (a full disk), they are kept."""
    try:
        Path(checkpoint).parent.mkdir(parents=True, exist_ok=True)
        model.save_weights(checkpoint)
    except OSError as exc:
        raise TrackingError(f"{_why(exc)} while saving the trained weights to {checkpoint}") from exc


def log_model_or_explain(
    log_model: Callable[[], None],
    checkpoint: Path,
    what: str = "the model",
    then: str = "train again or log the model from that file",
) -> None:
    """`log_model()`, with an error that names the cause when the disk is full or the artifact store refuses the
    write, instead of the upload's chained tracebacks; the weights are already at `checkpoint`, and `then` says
    what to do once the cause is fixed."""
    try:
        log_model()
    except Exception as exc:
        cause = os_error_in(exc)
        if cause is None:
            raise
        full = cause.errno in (errno.ENOSPC, errno.EDQUOT)
        advice = "free space where the run's artifacts are stored" if full else "check where the run's artifacts go"
        raise TrackingError(
            f"{_why(cause)} while logging {what}; weights kept at {checkpoint} ({advice}, then {then})"
        ) from exc


def os_error_in(exc: BaseException) -> OSError | None:
    """The OSError behind an exception (MLflow wraps upload errors in its own, sometimes several deep)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno is not None:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _why(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    if exc.errno == errno.EDQUOT:
        return "disk quota exceeded"
    return f"{exc.strerror or exc.__class__.__name__} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"
