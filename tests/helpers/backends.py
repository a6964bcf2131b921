"""Training on another Keras backend in a process of its own, where TensorFlow cannot be imported (backend_runner.py
is the script that process runs)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

RUNNER = str(Path(__file__).resolve().with_name("backend_runner.py"))
# What a sweep run through RUNNER names as its pruner (hydra.sweeper.pruner._target_=...): the runner puts tests/
# on its sys.path.
PRUNE_AFTER_STARTUP = "helpers.backend_runner.PruneAfterStartup"


def needs(module: str):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} is not installed")


def backend_env(backend: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KERAS_BACKEND", "XLA_FLAGS")}
    return {**env, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", **extra}
