"""Which Keras backend a process runs: TensorFlow, JAX or PyTorch (config `hardware.backend`).

Keras reads KERAS_BACKEND once, when it is first imported, and a process keeps that backend: so the Hydra door
(dermsweep.train) calls `select` with the composed config's backend before anything imports keras, and the shipping
commands (export, promote, predict, serve, web) select TensorFlow, where TFLite and ONNX export run. Once keras is
loaded `select` only checks, and names the fix when the process already runs another backend (a sweep runs its
jobs in one process: one backend per sweep). Importing this module imports no backend.
"""

from __future__ import annotations

import os
import sys

from .errors import ConfigError

BACKENDS = ("tensorflow", "jax", "torch")


def select(name: str, key: str = "hardware.backend") -> None:
    """Make `name` this process's Keras backend, or check that it already is. Raises ConfigError naming `key`."""
    if name not in BACKENDS:
        raise ConfigError(f"{key}={name!r}: unknown; choose one of {', '.join(BACKENDS)}")
    if "keras" not in sys.modules:
        os.environ["KERAS_BACKEND"] = name
        return
    running = current()
    if running != name:
        raise ConfigError(
            f"{key}={name}: this process already runs Keras on {running}, and a process keeps its first backend. "
            f"Start a new process for {name} (one backend per sweep), or set {key}={running}"
        )


def current() -> str:
    """The backend keras runs on in this process (imports keras)."""
    import keras

    return str(keras.backend.backend())
