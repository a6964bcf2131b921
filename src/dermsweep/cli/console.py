"""What every command shares: quiet libraries, the rich console, JSON output, the tracking client, exit codes."""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from typing import Any

from ..printable import printable

EXIT_OK, EXIT_PARTIAL, EXIT_ERROR, EXIT_REFUSED = 0, 1, 2, 3


def quiet_libraries(verbose: bool = False) -> None:
    """Keep TensorFlow's C++ start-up lines, MLflow's advice and Python warnings off the terminal (unless -v)."""
    if verbose:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore")
    for name in ("mlflow", "absl", "tensorflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)


def console(stderr: bool = False, width: int | None = None):
    """A rich console on stdout (or stderr): `width` columns, else the terminal's ($COLUMNS first), else 220."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    if width is None and not stream.isatty():
        # Not a terminal (pipes, CI logs): $COLUMNS when set, else wide enough that tables are not squeezed.
        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else 220
    # Messages on stderr are one line each, never wrapped (scripts and tests read them whole); tables keep the width.
    return Console(file=stream, highlight=False, width=width, soft_wrap=stderr)


def literal(text: str):
    """rich Text for `text` shown as is: no markup ([b], [/b], [link=...]), no emoji codes, no control characters."""
    from rich.text import Text

    return Text(printable(text))


def literal_lines(lines):
    """Several lines, each shown literally (see `literal`), as one rich Text."""
    from rich.text import Text

    return Text("\n".join(printable(line) for line in lines))


def client(args: Any, reap: bool = True):
    """The MLflow client for --tracking-uri / $MLFLOW_TRACKING_URI / the default store, which must exist
    (reap=False: leave runs of dead processes to the caller, `runs --reap`)."""
    from ..tracking.store import connect

    return connect(args.tracking_uri, create=False, reap=reap)


def print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))
