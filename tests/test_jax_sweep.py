"""A sweep on JAX, without TensorFlow in its process: 3 Optuna trials through train.py -m, one of them pruned; then
its winner promoted and exported (TFLite, ONNX) here, under TensorFlow, from the model JAX trained.

The trials share one architecture and a constant learning rate, so they compile the same XLA programs: the later
trials find them in the JAX compilation cache (hardware.py) and the sweep stays at smoke size.
"""

from __future__ import annotations

import subprocess
import sys

import mlflow
import optuna
import pytest

from dermsweep.tracking import run_format as rf
from helpers.backends import PRUNE_AFTER_STARTUP, RUNNER, backend_env, needs

pytestmark = [pytest.mark.slow, needs("jax")]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    ws = tmp_path_factory.mktemp("jax_sweep")
    uri = f"sqlite:///{ws}/mlflow.db"
    cmd = [
        sys.executable,
        RUNNER,
        "-m",
        "+sweep=smoke",
        "hardware.backend=jax",
        "experiment=jax-sweep",
        "hydra.sweeper.n_trials=3",
        f"hydra.sweeper.pruner._target_={PRUNE_AFTER_STARTUP}",  # the third trial is pruned
        "hydra.sweeper.plots=false",
        # fixed on the command line, over the sweep's own ranges: one architecture, one set of XLA programs
        "model.alpha=0.25",
        "model.dropout=0.2",
        "schedule=constant",
        "model.height=32",
        "model.width=32",
        "trainer.frozen.epochs=2",  # epoch 1 can be pruned: the last epoch never is
        "trainer.finetune.epochs=0",
        f"tracking.uri={uri}",
        f"tracking.artifact_root={ws}/artifacts",
        f"hydra.sweeper.storage=sqlite:///{ws}/optuna.db",
        f"hydra.sweep.dir={ws}/multirun",
        f"cache_dir={ws}/cache",
    ]
    proc = subprocess.run(cmd, cwd=ws, env=backend_env("jax"), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return ws, uri


def test_sweep_trials_complete_prune_and_record_the_backend(sweep):
    ws, uri = sweep
    study = optuna.load_study(study_name="jax-sweep-smoke", storage=f"sqlite:///{ws}/optuna.db")
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert all(t.intermediate_values for t in study.trials)  # every epoch reported to Optuna
    client = mlflow.MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("jax-sweep").experiment_id])
    trials = {int(r.data.tags[rf.TRIAL_NUMBER]): r for r in runs if r.data.tags.get(rf.ROLE) == "trial"}
    assert sorted(trials) == [0, 1, 2]
    assert {r.data.tags[rf.BACKEND] for r in trials.values()} == {"jax"}
    assert trials[2].info.status == "KILLED" and trials[2].data.tags[rf.STATUS] == "pruned"
    assert trials[0].info.status == trials[1].info.status == "FINISHED"


def test_promote_and_export_the_jax_trained_winner(sweep, tmp_path, monkeypatch):
    from dermsweep.shipping import export as ex
    from dermsweep.shipping.promotion import promote
    from dermsweep.tracking.store import connect

    ws, uri = sweep
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    try:
        client = connect(uri, create=False)
        p = promote(client, "jax-sweep", "jax-model")
        assert p.decision == "promoted"
        report = ex.export("models:/jax-model@champion", tmp_path, client, runs=1, warmup=0, formats=FORMATS)
        assert [r.format for r in report.rows] == list(FORMATS), report.notes
        assert report.row("keras").agreement == 1.0 and all(r.error is None for r in report.rows)
        for fmt in ("tflite_f32", "onnx"):
            row = report.row(fmt)
            assert row.error is None and row.max_abs_diff < 1e-4 and row.agreement == 1.0
        assert (tmp_path / "model_f32.tflite").stat().st_size > 0 and (tmp_path / "model.onnx").stat().st_size > 0

    finally:
        mlflow.set_tracking_uri(None)


FORMATS = ("keras", "tflite_f32", "tflite_int8", "onnx")
