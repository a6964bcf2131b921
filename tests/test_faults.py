"""Fault injection on the real train.py: hard kills, bad configs, NaN losses, bad data, a tracking server that is
down or dies. Run alone with `pytest -m faults`. Each test says what it breaks and what must survive."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest

from dermsweep.tracking import run_format as rf
from helpers.config import REPO, SMALLEST
from helpers.servers import free_port, start_mlflow_server

pytestmark = [pytest.mark.faults, pytest.mark.slow]
TRAIN = str(REPO / "train.py")
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
# The smallest real training: 32x32 synthetic images, one phase of 4 steps, no model logging.
TINY = [
    "model=mobilenet_v1",
    "model.height=32",
    "model.width=32",
    "trainer.finetune.epochs=0",
    "tracking.log_model=false",
]


def sweep_cmd(ws: Path, n_trials: int, *extra: str) -> list[str]:
    return [
        sys.executable,
        TRAIN,
        "-m",
        "+sweep=smoke",
        *TINY,
        f"hydra.sweeper.n_trials={n_trials}",
        f"tracking.uri=sqlite:///{ws}/mlflow.db",
        f"hydra.sweeper.storage=sqlite:///{ws}/optuna.db",
        f"hydra.sweep.dir={ws}/multirun",
        f"cache_dir={ws}/cache",
        "hydra.sweeper.plots=false",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=3",
        *extra,
    ]


def all_runs(uri: str):
    client = mlflow.MlflowClient(uri)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


def _running_trial_runs(db: Path) -> list[str]:
    """Read-only peek with sqlite3: an MLflow client here would race the sweep's own schema creation."""
    import sqlite3

    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            rows = con.execute(
                "SELECT r.run_uuid FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                f"WHERE r.status = 'RUNNING' AND t.key = '{rf.ROLE}' AND t.value = 'trial'"
            ).fetchall()
        return [r[0] for r in rows]
    except sqlite3.Error:  # tables not created yet
        return []


def test_hard_kill_mid_sweep_then_resume(tmp_path):
    """SIGKILL the sweep while a trial trains; the same command again finishes the study, loses and repeats nothing,
    and no MLflow run is left RUNNING."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    proc = subprocess.Popen(
        sweep_cmd(tmp_path, 2),
        cwd=tmp_path,
        env=ENV,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.time() + 240
        while time.time() < deadline:  # wait for a trial's child run to be training
            running = _running_trial_runs(tmp_path / "mlflow.db")
            if running:
                break
            assert proc.poll() is None, "the sweep ended before it could be killed"
            time.sleep(0.5)
        else:
            pytest.fail("no trial started within 240 s")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_run = running[0]
    time.sleep(3.5)  # past grace_period: the dead trial's heartbeat is stale

    done = subprocess.run(sweep_cmd(tmp_path, 2), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]

    study = optuna.load_study(study_name="dermsweep-smoke", storage=f"sqlite:///{tmp_path}/optuna.db")
    void = {int(k.rsplit(".", 1)[1]) for k in study.user_attrs if k.startswith("dermsweep.void.")}
    counted = [t for t in study.trials if t.number not in void]
    assert len(counted) == 2 and all(t.state.is_finished() for t in counted)
    dead = [t for t in study.trials if t.number in void]
    assert dead and all(t.state == optuna.trial.TrialState.FAIL for t in dead)
    # The dead trial's parameters were re-queued and run once more; no finished trial ran twice.
    assert any(t.params == dead[0].params for t in counted)
    assert len({tuple(sorted(t.params.items())) for t in counted}) == len(counted)
    runs = all_runs(uri)
    assert not [r for r in runs if r.info.status == "RUNNING"], "a run was left RUNNING"
    orphan = mlflow.MlflowClient(uri).get_run(killed_run)
    assert orphan.info.status == "KILLED" and orphan.data.tags[rf.STATUS] == "killed"
    assert "died" in orphan.data.tags[rf.FAILURE_REASON]


# Through train.py, single run and sweep; the full table of invalid values is tests/test_config.py (in-process).
@pytest.mark.parametrize(
    "override,key",
    [
        ("model.alpha=0.3", "model.alpha"),  # no ImageNet weights for this width (with weights=imagenet)
        ("objective.direction=upwards", "objective.direction"),
    ],
)
def test_bad_config_fails_fast_without_runs_or_trials(tmp_path, override, key):
    extra = ["model.weights=imagenet"] if key == "model.alpha" else []
    single = subprocess.run(
        [
            sys.executable,
            TRAIN,
            "data=synthetic",
            *TINY,
            override,
            *extra,
            f"tracking.uri=sqlite:///{tmp_path}/m.db",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert single.returncode == 2 and single.stderr.strip().splitlines()[-1].startswith(f"error: {key}=")
    assert "Traceback" not in single.stderr and not Path(f"{tmp_path}/m.db").exists()
    # In a sweep the pre-flight rejects it before the study, any trial or MLflow run exists.
    sweep = subprocess.run(
        sweep_cmd(tmp_path, 2, override, *extra), cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=120
    )
    # Named as the key, or as the sweeper setting it feeds (hydra.sweeper.direction: ${objective.direction}).
    assert sweep.returncode == 2 and (f"{key}=" in sweep.stderr or key.split(".")[-1] in sweep.stderr)
    assert "Traceback" not in sweep.stderr, sweep.stderr[-3000:]
    assert not Path(f"{tmp_path}/optuna.db").exists() or not optuna.get_all_study_names(
        f"sqlite:///{tmp_path}/optuna.db"
    )
    assert not Path(f"{tmp_path}/mlflow.db").exists() or not all_runs(f"sqlite:///{tmp_path}/mlflow.db")


INJECT_NAN = """
# Fault injection for test_faults: the first epoch of the first trial in this process reports a NaN loss, as a
# diverging optimiser would; dermsweep's own NaN guard must turn that into a failed trial.
import dermsweep.training.fit as fit

_original = fit._EpochEvaluator.on_epoch_end
_done = []


def on_epoch_end(self, epoch, logs=None):
    if not _done:
        _done.append(True)
        logs["loss"] = float("nan")
    return _original(self, epoch, logs)


fit._EpochEvaluator.on_epoch_end = on_epoch_end
"""


def test_nan_loss_fails_the_trial_and_the_sweep_goes_on(tmp_path):
    """The loss of the first trial becomes NaN: that trial is FAIL with the reason, the next one still runs."""
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(INJECT_NAN)
    env = {**ENV, "PYTHONPATH": str(inject)}
    done = subprocess.run(
        sweep_cmd(tmp_path, 2, "hydra.sweeper.pruner=null"),
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    study = optuna.load_study(study_name="dermsweep-smoke", storage=f"sqlite:///{tmp_path}/optuna.db")
    states = [t.state for t in sorted(study.trials, key=lambda t: t.number)]
    assert states == [optuna.trial.TrialState.FAIL, optuna.trial.TrialState.COMPLETE], states
    assert "TrainingDiverged" in study.trials[0].user_attrs[rf.FAILURE_REASON]
    runs = {
        r.data.tags[rf.TRIAL_NUMBER]: r
        for r in all_runs(f"sqlite:///{tmp_path}/mlflow.db")
        if r.data.tags.get(rf.ROLE) == "trial"
    }
    assert runs["0"].info.status == "FAILED" and runs["0"].data.tags[rf.STATUS] == "failed"
    assert "loss became nan" in runs["0"].data.tags[rf.FAILURE_REASON]
    assert runs["1"].info.status == "FINISHED"


def test_tracking_server_dies_mid_run_keeps_the_checkpoint(tmp_path):
    """A real `mlflow server` on loopback dies after the first epoch: the run stops with an error that says where the
    best checkpoint is, and the checkpoint is there."""
    server, url = start_mlflow_server(tmp_path)
    env = {**ENV, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    proc = subprocess.Popen(
        [
            sys.executable,
            TRAIN,
            *SMALLEST,
            "model.height=32",
            "model.width=32",
            "trainer.frozen.epochs=3",
            "trainer.finetune.epochs=0",
            f"tracking.uri={url}",
            f"hydra.run.dir={tmp_path}/run",
            f"cache_dir={tmp_path}/cache",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        for line in proc.stdout:  # kill the server as soon as the first epoch was logged
            if line.startswith("epoch 1/"):  # the first epoch line (training/progress.py)
                os.killpg(server.pid, signal.SIGKILL)
                break
        out = proc.stdout.read()
        proc.wait(timeout=240)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
    checkpoint = tmp_path / "run" / "checkpoints" / "best.weights.h5"
    assert proc.returncode == 2, out[-3000:]
    assert "lost the MLflow tracking store" in out and str(checkpoint) in out
    assert checkpoint.is_file() and checkpoint.stat().st_size > 0


def test_tracking_server_down_at_start_fails_before_training(tmp_path):
    port = free_port()  # nothing listens there
    done = subprocess.run(
        [
            sys.executable,
            TRAIN,
            "data=synthetic",
            *TINY,
            f"tracking.uri=http://127.0.0.1:{port}",
            f"hydra.run.dir={tmp_path}/run",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "unreachable" in done.stderr and "Nothing was trained" in done.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_bad_files_are_logged_to_mlflow(tmp_path, ham_subset):
    """Truncated and non-image files in the data: skipped, counted and named in the run (default mode)."""
    import shutil

    root = tmp_path / "data"
    shutil.copytree(ham_subset, root)
    images = sorted((root / "HAM10000_images_part_1").glob("*.jpg"))
    images[0].unlink()
    images[0].write_bytes(b"")
    images[1].unlink()
    images[1].write_text("not an image")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    done = subprocess.run(
        [
            sys.executable,
            TRAIN,
            "data=ham10000",
            f"data.root={root}",
            *TINY,
            "trainer=smoke",
            "model=mobilenet_v1",
            "resolution=64x64",
            "data.max_images=null",
            f"tracking.uri={uri}",
            f"hydra.run.dir={tmp_path}/run",
            f"cache_dir={tmp_path}/cache",
        ],
        cwd=tmp_path,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (r,) = all_runs(uri)
    assert r.data.metrics[rf.metric(rf.RUN, "data_skipped")] == 2 and r.data.params["data.skipped"] == "2"
    with open(mlflow.MlflowClient(uri).download_artifacts(r.info.run_id, "data/problems.txt")) as f:
        text = f.read()
    assert f"{images[0].stem}: " in text and "empty file" in text and f"{images[1].stem}: " in text


def _sigterm_after_first_epoch(cmd: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, str]:
    """Start `cmd`, send SIGTERM (what `kill`, `timeout` and container stops send) once an epoch was logged."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if re.match(r"epoch\s+1/", line):  # training/progress.py's line for the first epoch
                proc.send_signal(signal.SIGTERM)
                break
        out = proc.stdout.read()
        proc.wait(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(cmd, proc.returncode), out


LONG = ["trainer=smoke", "trainer.frozen.epochs=40", "model.height=32", "model.width=32", "trainer.finetune.epochs=0"]


def test_sigterm_ends_a_single_run_like_ctrl_c(tmp_path):
    """SIGTERM mid-training: the best checkpoint is kept, the run ends KILLED with "stopped by SIGTERM" (not left
    RUNNING), and the process says so in one line."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = [
        sys.executable,
        TRAIN,
        "data=synthetic",
        "model=mobilenet_v1",
        *LONG,
        f"tracking.uri={uri}",
        f"hydra.run.dir={tmp_path}/run",
        f"cache_dir={tmp_path}/cache",
    ]
    done, out = _sigterm_after_first_epoch(cmd, tmp_path)
    assert done.returncode == 130, out[-3000:]
    assert out.strip().splitlines()[-1].startswith("error: stopped by SIGTERM"), out[-3000:]
    assert "Traceback" not in out
    (run,) = all_runs(uri)
    assert run.info.status == "KILLED" and run.data.tags[rf.STATUS] == "killed"
    assert run.data.tags[rf.FAILURE_REASON] == "stopped by SIGTERM"
    checkpoint = tmp_path / "run" / "checkpoints" / "best.weights.h5"
    assert checkpoint.is_file() and checkpoint.stat().st_size > 0


def test_sigterm_to_a_sweep_gives_its_trial_back(tmp_path):
    """SIGTERM mid-trial: the trial's run is KILLED with the reason, the trial is given back (not RUNNING, not
    counted) with its parameters queued for the next run, and the parent run is not left RUNNING."""
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cmd = sweep_cmd(tmp_path, 1, *LONG[1:])
    done, out = _sigterm_after_first_epoch(cmd, tmp_path)
    assert done.returncode == 130, out[-3000:]
    assert out.strip().splitlines()[-1].startswith("error: stopped by SIGTERM"), out[-3000:]
    runs = all_runs(uri)
    trial_runs = [r for r in runs if r.data.tags.get(rf.ROLE) == "trial"]
    assert len(trial_runs) == 1 and trial_runs[0].info.status == "KILLED", [r.info.status for r in runs]
    assert trial_runs[0].data.tags[rf.FAILURE_REASON] == "stopped by SIGTERM"
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (name,) = optuna.get_all_study_names(f"sqlite:///{tmp_path}/optuna.db")
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path}/optuna.db")
    states = [t.state.name for t in study.trials]
    assert "RUNNING" not in states and "WAITING" in states, states  # given back: its parameters queued again


def test_a_full_disk_while_logging_the_model_keeps_the_weights_and_says_so(tmp_path, monkeypatch):
    """The model's upload fails with ENOSPC: the trained weights are already on disk, the run ends FAILED with
    the real cause in one line (not "lost the tracking store"), and the error says where the weights are."""
    import errno

    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository

    from dermsweep.errors import TrackingError
    from dermsweep.training.task import run
    from helpers.config import compose

    upload = LocalArtifactRepository.log_artifacts

    def full_disk(self, local_dir, artifact_path=None):
        if (Path(local_dir) / "MLmodel").is_file():  # the model's folder; every other artifact is written
            raise OSError(errno.ENOSPC, "No space left on device")
        return upload(self, local_dir, artifact_path)

    monkeypatch.setattr(LocalArtifactRepository, "log_artifacts", full_disk)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    cfg = compose(
        [
            "data=synthetic",
            "trainer=smoke",
            *TINY[:3],
            "tracking.log_model=always",
            f"tracking.uri={uri}",
            f"cache_dir={tmp_path}/c",
        ]
    )
    with pytest.raises(TrackingError) as caught:
        run(cfg)
    message = str(caught.value)
    assert message.startswith("no space left on device while logging the model; weights kept at "), message
    assert "\n" not in message and "lost the MLflow tracking store" not in message
    (found,) = all_runs(uri)
    assert found.info.status == "FAILED" and found.data.tags[rf.STATUS] == "failed"
    assert "no space left on device while logging the model" in found.data.tags[rf.FAILURE_REASON]
    checkpoint = Path(found.data.tags[rf.CHECKPOINT])
    assert str(checkpoint) in message and checkpoint.is_file() and checkpoint.stat().st_size > 0
