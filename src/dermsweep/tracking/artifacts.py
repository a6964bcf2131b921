"""What a run records besides metrics: the config as params, JSON artifacts, figures drawn off the main thread,
and the data splits as MLflow datasets."""

from __future__ import annotations

import json
import random
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import mlflow
import pandas as pd
from mlflow.data.pandas_dataset import from_pandas
from mlflow.exceptions import MlflowException
from omegaconf import DictConfig, OmegaConf


def flatten(cfg: DictConfig) -> dict[str, str]:
    """The resolved config as dotted params (model.alpha, trainer.finetune.lr, ...), Hydra's own keys left out."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(plain, dict)
    plain.pop("hydra", None)
    out: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(f"{prefix}.{k}" if prefix else str(k), v)
        else:
            out[prefix] = json.dumps(node) if isinstance(node, list) else str(node)

    walk("", plain)
    return out


def log_json(obj: Any, artifact_file: str) -> None:
    mlflow.log_text(json.dumps(obj, indent=2, default=float), artifact_file)


def log_splits(tables: dict[str, pd.DataFrame], name: str, split_id: str, source: str) -> None:
    """Each split as an MLflow dataset input (the run page's Datasets column and lineage): name, the split id as
    its digest, the data source. `tables` maps a context (train, validation, test) to its rows."""
    for context, table in tables.items():
        log_dataset(table, f"{name}-{context}", split_id, source, context)


def log_dataset(table: pd.DataFrame, name: str, digest: str, source: str, context: str) -> Any:
    """One table of labelled images as an MLflow dataset input of the active run; returns the dataset (metrics can
    name it)."""
    with warnings.catch_warnings():  # MLflow registers two local-file sources and warns that it picked one
        warnings.simplefilter("ignore", UserWarning)
        dataset = from_pandas(table, source=source, name=name, digest=digest)
    for attempt in range(1, _DATASET_ATTEMPTS):
        try:
            mlflow.log_input(dataset, context=context)
            return dataset
        except MlflowException as error:
            if not _lost_insert_race(error):
                raise
            time.sleep(random.uniform(0.05, 0.3) * attempt)
    mlflow.log_input(dataset, context=context)  # the last try: whatever it raises is the caller's
    return dataset


# MLflow's store looks a dataset up by (experiment, name, digest) and inserts it when absent, two statements apart:
# trials of one sweep on several workers log the same split at the same moment, and all but the first insert break
# the unique key (PostgreSQL: UniqueViolation; SQLite: UNIQUE constraint failed). The row exists then, so logging
# again links to it; the trial must not fail for lineage metadata.
_DATASET_ATTEMPTS = 4


def _lost_insert_race(error: MlflowException) -> bool:
    text = str(error).lower()
    return "unique constraint" in text or "uniqueviolation" in text or "duplicate key" in text


class BackgroundArtifacts:
    """Draws and logs a run's figures on one worker thread while the run goes on; `wait()` before ending the run.

    A run's figures cost ~1 s of matplotlib; here they overlap the final evaluation and the model logging. One
    thread draws them all, so matplotlib never runs on two threads at once.
    """

    def __init__(self, run_id: str):
        self.run_id = run_id
        self.client = mlflow.MlflowClient()
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="dermsweep-figures")
        self.pending: list[Future] = []

    def figure(self, draw: Any, artifact_file: str) -> None:
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
