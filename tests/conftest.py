"""Shared fixtures and hooks: the shared HAM10000 copy, MLflow stores, the stand-in sweeper app's working directory,
one real smoke training run per session, the shipping tests' store and headless Chromium. Constants and helper
functions live in tests/helpers/ (test modules import them from there, never from here).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from helpers.config import HAM10000, REPO, compose, tiny_run

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def mlflow_db(tmp_path_factory) -> Path:
    """A migrated MLflow SQLite database to copy per test (saves each test the schema migration): never written to."""
    import mlflow

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
    return db


@pytest.fixture
def ws(tmp_path, mlflow_db) -> Path:
    """A test's working directory for the stand-in sweeper app (helpers.sweeper), with its own MLflow store; the
    Optuna storage and Hydra's outputs go here too. The copied store's Default experiment (where an app's parent
    run goes when it names no experiment) keeps its artifacts here: the template recorded an absolute folder under
    pytest's working directory."""
    import sqlite3

    shutil.copy(mlflow_db, tmp_path / "mlflow.db")
    with sqlite3.connect(tmp_path / "mlflow.db") as con:
        con.execute("UPDATE experiments SET artifact_location = ?", ((tmp_path / "mlartifacts").as_uri(),))
    return tmp_path


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def ham10000() -> Path:
    if not (HAM10000 / "HAM10000_metadata.csv").is_file():
        pytest.skip(f"shared HAM10000 copy not found at {HAM10000}")
    return HAM10000


@pytest.fixture(scope="session")
def ham_subset(tmp_path_factory, ham10000) -> Path:
    """A small real HAM10000 folder in the Kaggle layout: 6 lesions per class (all their images), symlinked."""
    import pandas as pd

    root = tmp_path_factory.mktemp("ham_subset")
    meta = pd.read_csv(ham10000 / "HAM10000_metadata.csv")
    lesions = meta.drop_duplicates("lesion_id").sort_values("lesion_id").groupby("dx").head(6)["lesion_id"]
    subset = meta[meta["lesion_id"].isin(set(lesions))].sort_values("image_id")
    subset.to_csv(root / "HAM10000_metadata.csv", index=False)
    for i, image_id in enumerate(subset["image_id"]):
        part = "HAM10000_images_part_1" if i % 2 == 0 else "HAM10000_images_part_2"
        src = next(ham10000.glob(f"HAM10000_images_part_*/{image_id}.jpg"))
        (root / part).mkdir(exist_ok=True)
        (root / part / f"{image_id}.jpg").symlink_to(src)
    return root


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """One real training run (synthetic data, smoke trainer) into a private MLflow store, shared by tests.

    Returns a dict: cfg, run_id, uri, value (the returned objective), experiment.
    """
    import mlflow

    from dermsweep.training.task import run

    store = tmp_path_factory.mktemp("smoke_store")
    uri = f"sqlite:///{store}/mlflow.db"
    cfg = compose(tiny_run(store, "smoke-test"))
    value = run(cfg)
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke-test")
    (found,) = client.search_runs([exp.experiment_id])
    return {
        "cfg": cfg,
        "run_id": found.info.run_id,
        "uri": uri,
        "value": value,
        "experiment": "smoke-test",
        "store": store,
    }


@pytest.fixture
def store(tmp_path_factory, monkeypatch):
    """The shipping tests' tracking store (helpers.shipping: built once per session), active for a test."""
    from helpers.shipping import activate, shared_store

    s = shared_store(tmp_path_factory)
    activate(s, monkeypatch)
    return s


@pytest.fixture(scope="module")
def chromium():
    """A headless Chromium driver (helpers.browser) for a test module; skipped where Chromium is not installed."""
    from helpers.browser import headless_chromium

    with headless_chromium() as driver:
        yield driver
