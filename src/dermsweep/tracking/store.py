"""The MLflow tracking store: the one connect function (and its timeouts) for training, sweeps and the CLI, and
the one rule for where an experiment keeps its artifacts. Connecting also reaps runs whose process died
(tracking.run_owner)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from mlflow.tracking import MlflowClient

from ..errors import TrackingError
from . import experiment_kind, run_owner
from .store_files import check_sqlite_file

DEFAULT_URI = "sqlite:///mlruns/mlflow.db"  # conf/config.yaml's tracking.uri says the same (pinned by a test)
# A server that does not answer costs seconds, not MLflow's default minutes of retries; users may override both.
HTTP_TIMEOUT_S = "20"
HTTP_MAX_RETRIES = "3"


def tracking_uri(explicit: str | None = None) -> str:
    """The explicit URI (config or --tracking-uri), else $MLFLOW_TRACKING_URI, else the local default store."""
    return str(explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI)


def connect(uri: str | None = None, *, create: bool = True, reap: bool = True) -> MlflowClient:
    """Point MLflow (tracking and registry) at the store, prove it answers, and return a client.

    create=True (training, sweeps) makes a local SQLite store's folder; create=False (reading commands) wants the
    store to exist already, so a typo'd path is an error instead of an empty new store. reap=True marks runs left
    RUNNING by dead processes KILLED (tracking.run_owner), so the next command that opens the store tidies up.
    """
    import mlflow

    uri = tracking_uri(uri)
    scheme = urlparse(uri).scheme
    if scheme == "sqlite":
        db = Path(uri.removeprefix("sqlite:///"))
        if not create and not db.exists():
            raise TrackingError(
                f"no tracking store at {db} (tracking URI {uri}): train or sweep first (`make demo`), "
                "or point --tracking-uri / MLFLOW_TRACKING_URI at your store"
            )
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"tracking.uri={uri!r}: cannot create {db.parent} ({exc})") from exc
        check_sqlite_file(db, "MLflow tracking store", "or point --tracking-uri / MLFLOW_TRACKING_URI at another store")
    elif scheme in ("http", "https"):
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", HTTP_TIMEOUT_S)
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", HTTP_MAX_RETRIES)
        _check_server(uri)
    elif scheme in ("", "file"):
        raise TrackingError(
            f"tracking.uri={uri!r}: MLflow 3 keeps the plain file store in maintenance mode; use a database URI "
            "such as sqlite:///mlruns/mlflow.db, or a tracking server (http://host:5000)"
        )
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        client = MlflowClient(uri, registry_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:  # one line, never the driver's traceback
        raise TrackingError(f"tracking store {uri!r} does not answer: {first_line(exc)}") from exc
    if reap:
        run_owner.reap_quietly(client)
    return client


def _check_server(uri: str) -> None:
    import requests

    try:
        requests.get(uri.rstrip("/") + "/health", timeout=5).raise_for_status()
    except Exception as exc:
        raise TrackingError(
            f"MLflow tracking server {uri} is unreachable ({exc.__class__.__name__}). Start it (mlflow server ...), "
            "fix MLFLOW_TRACKING_URI / tracking.uri, or unset it to use the local store sqlite:///mlruns/mlflow.db. "
            "Nothing was trained."
        ) from exc


def first_line(exc: BaseException) -> str:
    """An exception as one readable line (MLflow errors carry pages of server output)."""
    text = str(getattr(exc, "message", None) or exc).strip()
    line = (text.splitlines() or [type(exc).__name__])[0][:300]
    if "Max retries exceeded" in line or "Connection refused" in line:
        return "connection refused or host unreachable"
    return line


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None = None) -> str:
    """Experiment id for `name`, created if needed; the one rule for where its artifacts live: under
    `<artifact_root>/<slug(name)>`, or beside a local SQLite database when artifact_root is null (a server decides
    for itself). Safe when several processes (parallel trials, sweep workers) race to create it."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise TrackingError(f"experiment {name!r} is deleted; restore it in the MLflow UI or choose another name")
        experiment_kind.mark(client, found)  # made before the tag existed: open it on the runs list too
        return str(found.experiment_id)
    uri = str(client.tracking_uri or "")
    root = None
    if artifact_root:
        root = Path(artifact_root).resolve().as_uri()
    elif uri.startswith("sqlite:///"):
        root = Path(uri.removeprefix("sqlite:///")).resolve().parent.as_uri()
    slug = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)
    try:
        location = f"{root}/{slug}" if root else None
        return str(client.create_experiment(name, artifact_location=location, tags=experiment_kind.tags()))
    except Exception:  # created meanwhile by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def local_checkpoint_dir() -> Path:
    """The Hydra job's output folder when there is one, else a fresh temporary folder."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ValueError, ImportError):
        return Path(tempfile.mkdtemp(prefix="dermsweep-"))


def ui_hint(uri: str, experiment_id: str, run_id: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}{experiment_kind.UI_QUERY}"
    return (
        f"make ui  (or: mlflow ui --backend-store-uri {uri}), then "
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}{experiment_kind.UI_QUERY}"
    )
