"""What makes a run reproducible: seeds set everywhere, and the code's git commit."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    import keras

    # Python, NumPy, Keras' own seed (weight initialisers, dropout on JAX) and PyTorch's.
    with _tensorflow_hidden(keras.backend.backend() != "tensorflow"):
        keras.utils.set_random_seed(seed)


@contextlib.contextmanager
def _tensorflow_hidden(hide: bool) -> Iterator[None]:
    """keras.utils.set_random_seed also seeds TensorFlow whenever it can import it, and so would load it into a JAX
    or PyTorch process (~4 s and its memory, and its CUDA libraries beside JAX's on a GPU). Hidden for that call,
    Keras takes TensorFlow for absent in this process, as on a machine without it."""
    if not hide or "tensorflow" in sys.modules:
        yield
        return
    sys.modules["tensorflow"] = None  # type: ignore[assignment]  # `import tensorflow` raises ImportError
    try:
        yield
    finally:
        if sys.modules.get("tensorflow", 0) is None:
            del sys.modules["tensorflow"]


def git_state(cwd: str | Path | None = None) -> dict[str, str]:
    """Commit and whether the work tree has uncommitted changes; 'unknown' outside a git checkout."""
    where = str(cwd or Path(__file__).resolve().parent)

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
        return {"git.commit": commit, "git.dirty": str(dirty).lower()}
    except (OSError, subprocess.SubprocessError):
        return {"git.commit": os.environ.get("DERMSWEEP_GIT_COMMIT", "unknown"), "git.dirty": "unknown"}
