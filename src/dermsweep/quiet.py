"""Keeping library chatter off the terminal: C-level writes (TensorFlow, converters, MLIR) bypass Python's
sys.stdout, so these swap the file descriptors themselves; a training process's logging and warnings."""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import sys
import warnings
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
    import_backend_quietly("tensorflow")


def import_backend_quietly(backend: str) -> None:
    """Import Keras on the selected backend (and TensorFlow with it) with their C++ start-up lines off the terminal:
    on CPUs where TensorFlow turns oneDNN on by default (AVX512_VNNI, AVX512_BF16, AMX) it says so through absl
    before any log level is read, so TF_CPP_MIN_LOG_LEVEL cannot hide it. A failed import still raises."""
    wanted = ("tensorflow", "keras") if backend == "tensorflow" else ("keras",)
    missing = [name for name in wanted if name not in sys.modules]
    if not missing:
        return
    with redirected(2):
        for name in missing:
            importlib.import_module(name)


def quiet_training(verbose: bool = False) -> None:
    """Keep a training process's console to its own lines: no TensorFlow C++ start-up lines (set before TensorFlow
    is imported), no MLflow info lines ("Creating initial MLflow database tables") and no Python warnings (MLflow's
    "Add type hints" comes coloured with raw escape codes). verbose=True (train.py verbose=true) leaves all on."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # read when mlflow is imported
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    warnings.filterwarnings("ignore")
    for name in ("mlflow", "alembic", "absl", "tensorflow"):  # those already imported
        logging.getLogger(name).setLevel(logging.WARNING)


class ConsoleFormatter(logging.Formatter):
    """A training run's console lines (conf/hydra/job_logging/dermsweep.yaml): the message alone for information
    (the epoch lines), `warning: ...` / `error: ...` above it; the run's log file keeps the timestamped format."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.WARNING:
            return f"{record.levelname.lower()}: {message}"
        return message
