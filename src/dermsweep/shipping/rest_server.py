"""`dermsweep serve`: MLflow's own scoring app for a registered pyfunc model, run in this process behind the guard.

`mlflow models serve` starts bash, which execs uvicorn with MLflow's app: nothing can be put in front of that app,
and the command's process tree outlives a SIGTERM to whoever started it. Here the same app
(`mlflow.pyfunc.scoring_server.init`, so the same `/invocations`, `/ping`, `/health` and `/version`) is built in this
process, wrapped in `serve_guard.Guard` (body limit, Host/Origin allow-list, content types, JSON depth, slots), and
run by uvicorn behind the web app's connection guard (connections.py: a deadline for each request head, a cap on
open connections that pushes out slow, silent and idle ones first). One process, no children: SIGTERM or Ctrl-C
shuts the server down gracefully (requests in flight get `GRACE_SECONDS`), closes the port and removes the
downloaded model.
"""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path
from types import FrameType

from ..printable import printable
from .connections import ConnectionGuard, GuardedH11Protocol
from .serve_guard import Guard, Limits, allowed_hosts

GRACE_SECONDS = 10  # for requests in flight once SIGTERM or Ctrl-C arrives
MAX_CONNECTIONS = 64  # open connections; past it, one not being served is pushed out, else 503
HEAD_DEADLINE = 10.0  # seconds for a whole request head
HEADER_BYTES = 16 * 1024  # request line and headers (h11): larger heads are refused
KEEP_ALIVE_SECONDS = 5  # an idle kept-alive connection is closed after this


def build_app(model_dir: str | Path, host: str, allow_hosts: list[str] | tuple[str, ...] = (), limits=None):
    """MLflow's scoring app for the pyfunc model in `model_dir`, behind the guard."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(str(model_dir))
    return Guard(scoring_server.init(model), allowed_hosts(host, allow_hosts), limits or Limits())


def serve(
    model_uri: str,
    host: str,
    port: int,
    allow_hosts: list[str] | tuple[str, ...] = (),
    limits: Limits | None = None,
) -> int:
    """Download `model_uri` (into a folder of its own: the store may be read-only), serve it until SIGTERM or
    Ctrl-C, then return 0."""
    import mlflow
    import uvicorn

    previous = signal.signal(signal.SIGTERM, _terminate)  # uvicorn re-raises it after its graceful shutdown
    try:
        with tempfile.TemporaryDirectory(prefix="dermsweep-serve-") as tmp:
            local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
            app = build_app(local, host, allow_hosts, limits)
            connections = ConnectionGuard(MAX_CONNECTIONS, HEAD_DEADLINE, _log_escaped)
            config = uvicorn.Config(
                app,
                host=host,
                port=port,
                http=GuardedH11Protocol.bind(connections),
                lifespan="off",
                server_header=False,
                proxy_headers=False,  # X-Forwarded-* from a client are not trusted
                timeout_keep_alive=KEEP_ALIVE_SECONDS,
                timeout_graceful_shutdown=GRACE_SECONDS,
                h11_max_incomplete_event_size=HEADER_BYTES,
                log_level="info",
            )
            uvicorn.Server(config).run()
    except _Terminated:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


class _Terminated(Exception):
    """SIGTERM arrived: unwind (the downloaded model is removed) and exit 0."""


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _log_escaped(line: str) -> None:
    """The connection guard's lines (a refused head, a pushed-out connection), control characters escaped: what
    a client sent must not drive the operator's terminal."""
    import logging

    logging.getLogger("uvicorn.error").warning("%s", printable(line))
