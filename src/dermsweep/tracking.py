"""MLflow: where runs go, what each run records, and the checks that fail early when the store is unreachable."""
from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import mlflow
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from .errors import TrackingError

log = logging.getLogger(__name__)
MODEL_NAME = "model"  # artifact name of the logged Keras model in every run


def connect(tracking_cfg) -> str:
    """Point MLflow at the configured store (MLFLOW_TRACKING_URI wins via the config default) and prove it answers."""
    uri = str(tracking_cfg.uri)
    scheme = urlparse(uri).scheme
    if scheme == "sqlite":
        db = Path(uri.removeprefix("sqlite:///"))
        try:
            db.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise TrackingError(f"tracking.uri={uri!r}: cannot create {db.parent} ({exc})") from exc
    elif scheme in ("http", "https"):
        _check_server(uri)
    elif scheme in ("", "file"):
        raise TrackingError(
            f"tracking.uri={uri!r}: MLflow 3 keeps the plain file store in maintenance mode; use a database URI "
            "such as sqlite:///mlruns/mlflow.db, or a tracking server (http://host:5000)"
        )
    mlflow.set_tracking_uri(uri)
    try:
        MlflowClient(uri).search_experiments(max_results=1)
    except Exception as exc:
        raise TrackingError(f"tracking store {uri!r} does not answer: {exc}") from exc
    return uri


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


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None = None) -> str:
    """Experiment id for `name`, created if needed; the one rule for where its artifacts live: under
    `<artifact_root>/<slug(name)>`, or beside a local SQLite database when artifact_root is null (a server decides
    for itself). Safe when several processes (parallel trials, sweep workers) race to create it."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise TrackingError(f"experiment {name!r} is deleted; restore it in the MLflow UI or choose another name")
        return found.experiment_id
    uri = str(client.tracking_uri or "")
    root = None
    if artifact_root:
        root = Path(artifact_root).resolve().as_uri()
    elif uri.startswith("sqlite:///"):
        root = Path(uri.removeprefix("sqlite:///")).resolve().parent.as_uri()
    slug = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)
    try:
        return client.create_experiment(name, artifact_location=f"{root}/{slug}" if root else None)
    except Exception:  # created meanwhile by another process
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def experiment_id(name: str, tracking_cfg) -> str:
    return ensure_experiment(MlflowClient(), name, tracking_cfg.get("artifact_root"))


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as dotted params (model.alpha, trainer.finetune.lr, ...), Hydra's own keys left out."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    out: dict[str, str] = {}

    def walk(prefix: str, node) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = json.dumps(node) if isinstance(node, list) else str(node)

    walk("", plain)
    return out


def log_json(obj, artifact_file: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, default=float), artifact_file)


class BackgroundArtifacts:
    """Draws and logs a run's figures on one worker thread while the run goes on; `wait()` before ending the run.

    A run's three figures cost ~1 s of matplotlib; here they overlap the final evaluation and the model logging. One thread draws them all, so matplotlib never runs on two threads at once.
    """

    def __init__(self, run_id: str):
        from concurrent.futures import ThreadPoolExecutor

        self.run_id = run_id
        self.client = mlflow.MlflowClient()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="dermsweep-figures")
        self.pending = []

    def figure(self, draw, artifact_file: str) -> None:
        """Queue `draw()` (returns a matplotlib Figure made without pyplot) to be logged as `artifact_file`."""
        self.pending.append(self.pool.submit(lambda: self.client.log_figure(self.run_id, draw(), artifact_file)))

    def wait(self) -> None:
        """Block until every queued figure is logged; re-raises the first failure."""
        try:
            for future in self.pending:
                future.result()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def abandon(self) -> None:
        """The run failed: drop what is queued, finish what is running, and never raise (the first error counts)."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def log_keras_model(model, example, info: dict) -> None:
    """The Keras model with its signature (input and output schema) and metadata (class names, input size...).

    No input example: for an image it is ~1 MB of JSON, and MLflow reloads the saved model to check it serves
    (2-4 s per run, a tenth of a short trial). The tests load logged models through pyfunc and predict instead.
    """
    import keras
    import numpy as np
    import tensorflow as tf
    from mlflow.models import infer_signature

    example = example.astype(np.float32)
    probs = np.asarray(model(example, training=False), dtype=np.float32)
    signature = infer_signature(example, probs)
    # Explicit requirements: inferring them imports the model in a subprocess (~15 s per run on 2 cores).
    requirements = [f"tensorflow=={tf.__version__}", f"keras=={keras.__version__}", "numpy", "pillow"]
    mlflow.tensorflow.log_model(model, name=MODEL_NAME, signature=signature, metadata=info,
                                pip_requirements=requirements)
    log_json(info, "model_info.json")


def local_checkpoint_dir() -> Path:
    """The Hydra job's output folder when there is one, else a fresh temporary folder."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return Path(HydraConfig.get().runtime.output_dir)
    except (ValueError, ImportError):
        return Path(tempfile.mkdtemp(prefix="dermsweep-"))


def ui_hint(uri: str, experiment_id: str, run_id: str) -> str:
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"
    return (f"make ui  (or: mlflow ui --backend-store-uri {uri}), then "
            f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs/{run_id}")


os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
