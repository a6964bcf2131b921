"""What makes a run reproducible: seeds set everywhere, and the code's git commit."""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import numpy as np


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    import keras

    keras.utils.set_random_seed(seed)  # Python, NumPy and the backend (TensorFlow) at once


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
