"""Keeping library chatter off the terminal: C-level writes (TensorFlow, converters, MLIR) bypass Python's
sys.stdout, so these swap the file descriptors themselves."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def redirected(fd: int, target: int | None = None) -> Iterator[None]:
    """Send file descriptor `fd` (1 = stdout, 2 = stderr) to `target` (another fd), or to /dev/null."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(fd)
    null = open(os.devnull, "w") if target is None else None  # noqa: SIM115 - closed in finally
    try:
        os.dup2(null.fileno() if null is not None else target, fd)  # type: ignore[arg-type]
        if fd == 1 and target == 2:
            with contextlib.redirect_stdout(sys.stderr):
                yield
        else:
            yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved, fd)
        os.close(saved)
        if null is not None:
            null.close()


@contextlib.contextmanager
def silenced() -> Iterator[None]:
    """Both stdout and stderr to /dev/null (exporters print signature dumps); exceptions still propagate."""
    with redirected(1), redirected(2):
        yield


def import_tensorflow() -> None:
    """Import TensorFlow and Keras on the TensorFlow backend (where export, TFLite and Grad-CAM run, whatever backend
    trained the model), with their C++ start-up lines (oneDNN, absl) kept off the terminal."""
    from .keras_backend import select

    select("tensorflow", key="KERAS_BACKEND")
    if "tensorflow" in sys.modules:
        return
    with redirected(2):
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
