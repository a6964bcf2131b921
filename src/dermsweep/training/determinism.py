"""Reproducible runs: with `trainer.deterministic`, the same config, seed, backend and machine give the same
figures.

The input feed is deterministic by construction (data.stream: batches and augmentation are pure functions of the
seed and a position). What is left is the backend's own arithmetic: TensorFlow's op determinism (and tf.data
keeping parallel batches in order), PyTorch's deterministic algorithms, and XLA's deterministic GPU reductions on
JAX (XLA's CPU code is deterministic already). Seeds are set by provenance.seed_everything.

Called before the backend first runs anything (before hardware.configure probes the devices), and on every run:
a sweep's trials share one process and may set the switch differently.
"""

from __future__ import annotations

import os

_XLA_GPU_FLAG = "--xla_gpu_deterministic_ops=true"


def configure(deterministic: bool, backend: str) -> None:
    if backend == "tensorflow":
        from tensorflow.python.framework import config as tf_config  # the public API has no disable

        (tf_config.enable_op_determinism if deterministic else tf_config.disable_op_determinism)()
    elif backend == "torch":
        if deterministic:  # cuBLAS's deterministic mode needs a fixed workspace, read when CUDA starts
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        import torch

        # warn_only: an op without a deterministic kernel warns instead of failing the run.
        torch.use_deterministic_algorithms(deterministic, warn_only=True)
    elif backend == "jax":
        _xla_flag(deterministic)


def _xla_flag(deterministic: bool) -> None:
    """XLA reads XLA_FLAGS when JAX first starts a GPU backend: later changes in this process have no effect."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith("--xla_gpu_deterministic_ops")]
    if deterministic:
        flags.append(_XLA_GPU_FLAG)
    os.environ["XLA_FLAGS"] = " ".join(flags)
