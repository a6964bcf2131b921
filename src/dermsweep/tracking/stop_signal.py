"""SIGTERM ends a run the way Ctrl-C does. Schedulers, `timeout` and container stops send SIGTERM; Python's default
for it is to die at once (no checkpoint, the MLflow run left RUNNING). `stop_on_sigterm()` turns it into `Stopped`,
a KeyboardInterrupt, so every path that already handles Ctrl-C (fit keeps the best weights, the recorded run ends
KILLED with the reason, the sweeper gives its trials back) handles it too."""

from __future__ import annotations

import signal
import threading
from typing import Any


class Stopped(KeyboardInterrupt):
    """The process was asked to stop by a signal; the message names it ("stopped by SIGTERM")."""


def _raise_stopped(signum: int, frame: Any) -> None:
    raise Stopped(f"stopped by {signal.Signals(signum).name}")


def stop_on_sigterm() -> bool:
    """Install the handler (main thread only, where Python delivers signals); False when it could not be."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGTERM, _raise_stopped)
    return True


def stop_reason(exc: BaseException) -> str:
    """Why a KeyboardInterrupt stopped the work: the signal's name, or Ctrl-C."""
    if isinstance(exc, Stopped):
        return str(exc)
    return "interrupted (Ctrl-C)"
