"""What every command shares: quiet libraries, the rich console, JSON output, the tracking client, exit codes."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Any

EXIT_OK, EXIT_PARTIAL, EXIT_ERROR, EXIT_REFUSED = 0, 1, 2, 3


def quiet_libraries() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    for name in ("mlflow", "absl", "tensorflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Not a terminal (pipes, CI logs): wide enough that tables are not squeezed into 80 columns.
    width = None if stream.isatty() else 220
    return Console(file=stream, highlight=False, width=width)


def client(args: Any, reap: bool = True):
    """The MLflow client for --tracking-uri / $MLFLOW_TRACKING_URI / the default store, which must exist
    (reap=False: leave runs of dead processes to the caller, `runs --reap`)."""
    from ..tracking.store import connect

    return connect(args.tracking_uri, create=False, reap=reap)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
