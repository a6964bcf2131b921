"""Shared fixtures: config composition, the shared HAM10000 copy, and one real smoke training run per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED = REPO.parent / "shared"
HAM10000 = SHARED / "data" / "ham10000"
WEIGHTS = SHARED / "weights"


def compose(overrides: list[str] | None = None):
    """The config train.py would get for these command-line overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides or []))


# The smallest real training run: generated data, the smoke trainer, a random-init MobileNet at 64x64.
SMALLEST = ["data=synthetic", "trainer=smoke", "model=mobilenet_v1", "resolution=64x64", "data.max_images=140"]


def tiny_run(store: Path, experiment: str) -> list[str]:
    """Overrides for the smallest real training run (SMALLEST) into its own store under `store`."""
    return [
        *SMALLEST,
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        f"experiment={experiment}",
        f"cache_dir={store}/cache",
    ]


def wait_for(predicate, timeout: float, what: str):
    """predicate()'s first truthy value, polled every 0.3 s; the test fails naming `what` after `timeout` s."""
    import time

    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.3)
    pytest.fail(f"{what} within {timeout:.0f} s")


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory) -> Path:
    """A migrated MLflow SQLite database to copy per test (saves each test the schema migration)."""
    import mlflow

    db = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{db}").search_experiments(max_results=1)
    return db


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
    """The shipping tests' tracking store (tests/shipping_helpers.py: built once per session), active for a test."""
    from shipping_helpers import activate, shared_store

    s = shared_store(tmp_path_factory)
    activate(s, monkeypatch)
    return s
