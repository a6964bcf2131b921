"""The recorded-run lifecycle (tracking.recorded_run): every way a run can end leaves it claimed, with its final
status and reason, and what was logged kept; logged models load through MLflow's pyfunc loader in a process that
never imported dermsweep; a full disk while logging the model is named as such."""

from __future__ import annotations

import errno
import shutil
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest

from dermsweep.errors import TrackingError
from dermsweep.tracking import run_format as rf
from dermsweep.tracking.model_log import log_model_or_explain
from dermsweep.tracking.recorded_run import recorded_run
from dermsweep.tracking.stop_signal import Stopped


@pytest.fixture
def client(tmp_path, mlflow_db, monkeypatch):
    shutil.copyfile(mlflow_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    c = mlflow.MlflowClient(uri)
    yield c
    while mlflow.active_run() is not None:
        mlflow.end_run()


def _experiment(client) -> str:
    return client.create_experiment("lifecycle")


def test_a_finished_run_is_claimed_described_and_finished(client):
    with recorded_run(client, _experiment(client), "r", "evaluation", tags={"x": "1"}) as run:
        during = client.get_run(run.run_id)
        mlflow.log_metric("m", 1.0)
        run.finish("what it found")
    stored = client.get_run(run.run_id)
    assert during.info.status == "RUNNING" and during.data.tags[rf.STATUS] == "running"
    assert any(k.startswith(rf.OWNER + ".") for k in during.data.tags)  # claimed: reapable if its process dies
    assert stored.info.status == "FINISHED" and stored.data.tags[rf.STATUS] == "finished"
    assert stored.data.tags[rf.ROLE] == "evaluation" and stored.data.tags["x"] == "1"
    assert stored.data.tags[rf.DESCRIPTION] == "what it found" and stored.data.metrics["m"] == 1.0
    assert mlflow.active_run() is None


class TrialPruned(Exception):  # optuna's is recognised by name: tracking does not import optuna
    pass


@pytest.mark.parametrize(
    "exc, status, label, reason",
    [
        (ValueError("bad value"), "FAILED", "failed", "ValueError: bad value"),
        (KeyboardInterrupt(), "KILLED", "killed", "interrupted (Ctrl-C)"),
        (Stopped("stopped by SIGTERM"), "KILLED", "killed", "stopped by SIGTERM"),
        (TrialPruned("pruned at step 2"), "KILLED", "pruned", "pruned at step 2"),
    ],
)
def test_a_stopped_run_ends_with_its_reason_and_keeps_what_was_logged(client, exc, status, label, reason):
    with pytest.raises(type(exc)), recorded_run(client, _experiment(client), "r", "trial") as run:
        mlflow.log_metric("m", 2.0)
        raise exc
    stored = client.get_run(run.run_id)
    assert stored.info.status == status and stored.data.tags[rf.STATUS] == label
    assert stored.data.tags[rf.FAILURE_REASON] == reason
    assert stored.data.metrics["m"] == 2.0
    assert mlflow.active_run() is None


def test_a_run_marked_by_someone_else_meanwhile_still_ends_with_its_own_status(client):
    """A reaper that took a slow heartbeat for a dead process marked the run KILLED while it worked: the run's
    real end (FINISHED) is what is left in the store when its process is done."""
    with recorded_run(client, _experiment(client), "r", "trial") as run:
        client.set_tag(run.run_id, rf.STATUS, "killed")
        client.set_terminated(run.run_id, status="KILLED")
    stored = client.get_run(run.run_id)
    assert stored.info.status == "FINISHED" and stored.data.tags[rf.STATUS] == "finished"


def test_a_store_lost_while_ending_says_where_the_work_is(client, monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("store gone")

    kept = "weights at /x/best.h5"
    with (
        pytest.raises(TrackingError) as caught,
        recorded_run(client, _experiment(client), "r", "single", kept=lambda: kept) as run,
    ):
        monkeypatch.setattr(client, "log_batch", broken)
        raise ValueError("disk full")
    message = str(caught.value)
    assert "ValueError: disk full" in message and "lost the MLflow tracking store" in message
    assert "weights at /x/best.h5" in message and run.run_id in message
    assert mlflow.active_run() is None  # forgotten locally: the next run is not nested under it


def test_unknown_role_is_refused(client):
    with (
        pytest.raises(ValueError, match="unknown run role"),
        recorded_run(client, _experiment(client), "r", "nonsense"),
    ):
        pass


def test_a_full_disk_while_logging_the_model_is_named_with_where_the_weights_are(tmp_path):
    from mlflow.exceptions import MlflowException

    def upload():
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as exc:
            raise MlflowException("Failed to upload artifacts") from exc

    with pytest.raises(TrackingError) as caught:
        log_model_or_explain(upload, tmp_path / "best.weights.h5")
    assert str(caught.value).startswith("no space left on device while logging the model; weights kept at ")
    assert str(tmp_path / "best.weights.h5") in str(caught.value)
    with pytest.raises(KeyError):  # anything else goes on unchanged
        log_model_or_explain(lambda: (_ for _ in ()).throw(KeyError("x")), tmp_path / "w.h5")


CLEAN_LOAD = """
import sys, numpy as np, mlflow
assert "dermsweep" not in sys.modules
sys.modules["dermsweep"] = None  # as where dermsweep is not installed: `import dermsweep` fails from here on
mlflow.set_tracking_uri(sys.argv[1])
model = mlflow.pyfunc.load_model(sys.argv[2])
x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
p = np.asarray(model.predict(x))
print(p.shape, float(p.sum(axis=1).min()))
"""


def test_a_logged_model_with_views_loads_through_mlflow_pyfunc_in_a_clean_interpreter(client, tmp_path):
    """`mlflow.pyfunc.load_model(runs:/.../model)` in a Python that never imported dermsweep and cannot: the
    model's layers (test-time views, calibrated softmax) travel with it."""
    import keras

    from dermsweep.keras_layers import CalibratedSoftmax, DihedralView
    from dermsweep.tracking.model_log import log_keras_model

    inputs = keras.Input((16, 16, 3))
    head = keras.Sequential([keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(7)])
    views = [head(DihedralView(q, m)(inputs)) for q in (0, 1) for m in (False, True)]
    outputs = CalibratedSoftmax(1.5)(keras.layers.Average()(views))
    model = keras.Model(inputs, outputs)
    with recorded_run(client, _experiment(client), "r", "single") as run:
        log_keras_model(model, np.zeros((1, 16, 16, 3), np.float32), {"class_names": list("abcdefg")})
    script = tmp_path / "load.py"
    script.write_text(CLEAN_LOAD)
    # -I: isolated (no user site, no PYTHONPATH), and no `import dermsweep` anywhere before MLflow loads the model
    done = subprocess.run(
        [sys.executable, "-I", str(script), client.tracking_uri, f"runs:/{run.run_id}/{rf.MODEL}"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "(2, 7)" in done.stdout


# What the PostgreSQL store of a shared `mlflow server` answered a sweep worker whose trial logged its split a moment
# after another worker's trial logged the same one (abridged from a CI run).
LOST_RACE = (
    "RestException: BAD_REQUEST: (psycopg.errors.UniqueViolation) "
    'duplicate key value violates unique constraint "dataset_pk"\n'
    "DETAIL:  Key (experiment_id, name, digest)=(1, synthetic-validation, 331af99b461b) already exists."
)


def _log_split_with(monkeypatch, client, calls: list, *failures: str) -> list:
    """Log one split in a fresh run while mlflow.log_input first fails with each of `failures` in turn; `calls`
    collects its calls; returns the run's dataset inputs."""
    from mlflow.exceptions import MlflowException

    from dermsweep.tracking import artifacts

    real = mlflow.log_input

    def log_input(*args, **kwargs):
        calls.append(args)
        if len(calls) <= len(failures):
            raise MlflowException(failures[len(calls) - 1])
        return real(*args, **kwargs)

    monkeypatch.setattr(artifacts.time, "sleep", lambda s: None)
    monkeypatch.setattr(mlflow, "log_input", log_input)
    table = pd.DataFrame({"image_id": ["a", "b"], "label": ["nv", "mel"], "group": ["g1", "g2"]})
    with mlflow.start_run(experiment_id=_experiment(client)) as run:
        try:
            artifacts.log_splits({"validation": table}, "synthetic", "331af99b461b", "synthetic")
        finally:
            inputs = client.get_run(run.info.run_id).inputs.dataset_inputs
    return inputs


def test_a_split_logged_by_another_worker_at_the_same_moment_is_linked_not_fatal(client, monkeypatch):
    calls: list = []
    inputs = _log_split_with(monkeypatch, client, calls, LOST_RACE, LOST_RACE.replace("psycopg", "sqlite3"))
    assert len(calls) == 3
    assert [(d.dataset.name, d.dataset.digest) for d in inputs] == [("synthetic-validation", "331af99b461b")]


def test_other_errors_logging_a_split_are_not_retried(client, monkeypatch):
    calls: list = []
    with pytest.raises(Exception, match="permission denied"):
        _log_split_with(monkeypatch, client, calls, "RestException: PERMISSION_DENIED: permission denied")
    assert len(calls) == 1
