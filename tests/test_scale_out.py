"""Outgrowing one machine, proven on real servers: a throwaway PostgreSQL (Debian's `postgresql` package, on
loopback) as the Optuna storage of three sweep workers, each with its own folders as on three machines, and as the
backend of a real `mlflow server` they all log to. Skipped, with the reason, where PostgreSQL or psycopg is absent
(.ci/run installs both). docs/scale-out.md is the runbook these tests keep true."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from dermsweep.tracking import run_format as rf
from helpers.config import REPO
from helpers.servers import Postgres, postgres_missing, start_mlflow_server, stop
from helpers.sweeper import APP, app_env
from helpers.waiting import wait_for

MISSING = postgres_missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(MISSING is not None, reason=str(MISSING))]

TRAIN = str(REPO / "train.py")
DERMSWEEP = [sys.executable, "-c", "import sys; from dermsweep.cli import main; sys.exit(main())"]
TIMEOUT = 1200  # generous: CI shares 2 cores with whatever else runs; a hang still ends the test


@pytest.fixture(scope="module")
def postgres():
    pg = Postgres().start()
    yield pg
    pg.stop()


@pytest.fixture(scope="module")
def mlflow_server(postgres, tmp_path_factory):
    """A real `mlflow server` whose backend store is a PostgreSQL database; artifacts proxied by the server."""
    server, url = start_mlflow_server(tmp_path_factory.mktemp("mlflow-server"), postgres.create_database("mlflow"))
    yield url
    stop(server, signal.SIGKILL)  # throwaway: its store is dropped with the cluster


def _finish(procs: list, timeout: float = TIMEOUT) -> list[str]:
    """Wait for worker processes (started in sessions of their own) within one deadline; on expiry kill them all
    and fail with the end of each one's output."""
    deadline, outs = time.time() + timeout, []
    for p in procs:
        try:
            outs.append(p.communicate(timeout=max(1.0, deadline - time.time()))[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                if q.poll() is None:
                    os.killpg(q.pid, signal.SIGKILL)
            pytest.fail(f"workers not done within {timeout:.0f} s:\n{_tails([q.communicate()[0] for q in procs])}")
    return outs


def _tails(outs: list[str], chars: int = 2500) -> str:
    """The end of each worker's output, for a failure message."""
    return "\n".join(f"--- worker {i}:\n{(out or '')[-chars:]}" for i, out in enumerate(outs))


def _client(url: str):
    import mlflow

    return mlflow.MlflowClient(url)


def _runs(url: str, experiment: str) -> list:
    client = _client(url)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"experiment {experiment} not created"
    return client.search_runs([exp.experiment_id], max_results=1000)


def _counted(study) -> list:
    void = {int(k.rsplit(".", 1)[1]) for k in study.user_attrs if k.startswith("dermsweep.void.")}
    return [t for t in study.trials if t.number not in void]


def _check_one_parent_with_every_child(runs: list, study) -> tuple:
    """One parent run for the study, and exactly one child run per counted trial (none lost, none twice)."""
    parents = [r for r in runs if r.data.tags.get(rf.ROLE) == "sweep"]
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0]
    children = [r for r in runs if r.data.tags.get(rf.PARENT_RUN_ID) == parent.info.run_id]
    by_trial = Counter(int(r.data.tags[rf.TRIAL_NUMBER]) for r in children)
    assert max(by_trial.values()) == 1, by_trial  # no trial ran twice
    assert {t.number for t in _counted(study)} <= set(by_trial), by_trial  # none lost
    return parent, children


def test_three_workers_on_postgres_log_to_one_mlflow_server_then_promote_and_predict(tmp_path, postgres, mlflow_server):
    """Three `train.py -m +sweep=smoke` workers, each with its own working, sweep and cache folders, share one
    PostgreSQL study and one MLflow server: exactly n_trials trials between them, none run twice, one parent run
    with every child; the winner is then promoted and predicts through that server."""
    storage = postgres.create_database("optuna_workers")
    n_trials, study_name, experiment = 3, "scale-out-smoke", "scale-out"
    started = time.time()
    workers = _spawn_workers(
        tmp_path,
        lambda i, folder: [
            sys.executable,
            TRAIN,
            "-m",
            "+sweep=smoke",
            "model.height=32",
            "model.width=32",
            "trainer.finetune.epochs=0",
            f"experiment={experiment}",
            f"hydra.sweeper.study_name={study_name}",
            f"hydra.sweeper.n_trials={n_trials}",
            f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.sampler.seed=null",  # workers started together: no shared seed (docs/sweeps.md)
            "hydra.sweeper.plots=false",
            f"tracking.uri={mlflow_server}",
            f"hydra.sweep.dir={folder}/multirun",
            f"cache_dir={folder}/cache",
        ],
    )
    outs = _finish(workers)
    wall = time.time() - started
    for w, out in zip(workers, outs, strict=True):
        assert w.returncode == 0, out[-4000:]
    print(f"\n3 workers, {n_trials} trials: {wall:.0f} s wall")

    import optuna

    study = optuna.load_study(study_name=study_name, storage=storage)
    counted = _counted(study)
    assert len(counted) == n_trials and all(t.state.is_finished() for t in counted)
    assert len({tuple(sorted(t.params.items())) for t in counted}) == n_trials  # no point evaluated twice
    runs = _runs(mlflow_server, experiment)
    parent, children = _check_one_parent_with_every_child(runs, study)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics[rf.metric(rf.SWEEP_SECTION, "n_finished")] == n_trials
    ended = [(r.info.run_name, r.info.status, r.data.tags.get(rf.FAILURE_REASON)) for r in children]
    assert len(children) == n_trials and all(r.info.status in ("FINISHED", "KILLED") for r in children), (
        f"{ended}\n" + _tails(outs)
    )
    assert not [r for r in runs if r.info.status == "RUNNING"]
    # every worker is an owner of the one parent run, and the children were trained by several of them (a worker
    # that starts late may find every trial taken: that is the point of the claim rule)
    owners = [k for k in parent.data.tags if k.startswith(rf.OWNER + ".")]
    assert len(owners) == 3, owners
    trainers = {k for r in children for k in r.data.tags if k.startswith(rf.OWNER + ".")}
    assert len(trainers) >= 2, trainers

    args = ["--tracking-uri", mlflow_server]
    promoted = subprocess.run(
        [*DERMSWEEP, "promote", *args, "--experiment", experiment, "--sweep", study_name, "--json"],
        cwd=tmp_path,
        env=app_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert promoted.returncode == 0, promoted.stderr[-3000:]
    decision = json.loads(promoted.stdout)
    assert decision["decision"] == "promoted" and decision["version"] == "1"
    assert decision["candidate"]["run_id"] in {r.info.run_id for r in children}

    from PIL import Image

    image = tmp_path / "lesion.png"
    Image.new("RGB", (40, 30), (180, 120, 100)).save(image)
    predicted = subprocess.run(
        [*DERMSWEEP, "predict", str(image), *args, "--json"],
        cwd=tmp_path,
        env=app_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    (prediction,) = json.loads(predicted.stdout)["predictions"]
    assert prediction["top"] and abs(sum(prediction["probabilities"].values()) - 1) < 1e-3


def _spawn_workers(tmp_path: Path, argv, n: int = 3) -> list[subprocess.Popen]:
    """`n` sweep workers, each in a folder of its own as on separate machines; argv(i, folder) is worker i's command."""
    workers = []
    for i in range(n):
        folder = tmp_path / f"machine{i}"
        folder.mkdir()
        workers.append(
            subprocess.Popen(
                argv(i, folder),
                cwd=folder,
                env=app_env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                start_new_session=True,
            )
        )
    return workers


def _own_pid_namespace() -> list[str] | None:
    """A command prefix that runs a process in a PID namespace of its own (unshare, as root), or None: to this
    machine such a process is on another machine (its pid cannot be checked from here)."""
    import shutil

    if os.geteuid() != 0 or not shutil.which("unshare"):
        return None
    prefix = ["unshare", "--pid", "--fork", "--mount-proc"]
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=30)
    return prefix if probe.returncode == 0 else None


@pytest.mark.faults
@pytest.mark.parametrize("victim_on", ["this machine", "another machine"])
def test_a_worker_killed_mid_trial_loses_nothing(tmp_path, postgres, mlflow_server, victim_on):
    """SIGKILL one of three workers while its trial runs (the stand-in app: no TensorFlow, seconds per trial): the
    other two fail that trial, do not count it, re-run its parameters, and still finish exactly n_trials; its MLflow
    run is KILLED with the reason and the parent run has every child. On this machine the dead pid is seen at once
    (void=killed); "another machine" (the victim in a PID namespace of its own, which no pid check can see into) is
    found by Optuna's heartbeat after grace_period (void=stale)."""
    import optuna

    from dermsweep import liveness

    elsewhere = _own_pid_namespace() if victim_on == "another machine" else []
    if elsewhere is None:
        pytest.skip("needs root and unshare to run a worker in its own PID namespace")
    tag = victim_on.split()[0]
    storage = postgres.create_database(f"optuna_kill_{tag}")
    n_trials, study_name, experiment = 6, f"scale-out-kill-{tag}", f"scale-out-kill-{tag}"
    common = [
        "-m",
        "hydra/sweeper=optuna",
        f"experiment={experiment}",
        f"hydra.sweeper.study_name={study_name}",
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.storage={storage}",
        "hydra.sweeper.plots=false",
        "hydra.sweeper.validate=null",
        "hydra.sweeper.heartbeat_interval=1",
        "hydra.sweeper.grace_period=5",
        "hydra.sweeper.pruner=null",  # every counted trial COMPLETE, whatever the median rule would say
        f"tracking.uri={mlflow_server}",
        "tracking.artifact_root=null",
        "x=interval(0, 1)",
        "y=choice(0.2, 0.6, 0.9)",
        "sleep=1.0",
    ]
    started = time.time()
    workers = _spawn_workers(
        tmp_path,
        lambda i, folder: [
            *(elsewhere if i == 0 else []),
            sys.executable,
            str(APP),
            *common,
            f"hydra.sweep.dir={folder}/ms",
            f"hydra.run.dir={folder}/run",
        ],
    )
    victim = workers[0]

    def is_victims(record: str) -> bool:
        owner = liveness.parse(record)
        if owner is None:
            return False
        return owner.machine != liveness.me().machine if elsewhere else owner.pid == victim.pid

    def victims_trial():
        import mlflow

        client = mlflow.MlflowClient(mlflow_server)
        exp = client.get_experiment_by_name(experiment)
        if exp is None:
            return None
        for r in client.search_runs([exp.experiment_id], filter_string="attributes.status = 'RUNNING'"):
            owners = [v for k, v in r.data.tags.items() if k.startswith(rf.OWNER + ".")]
            if r.data.tags.get(rf.ROLE) == "trial" and any(is_victims(v) for v in owners):
                return r
        return None

    running = wait_for(victims_trial, 600, "the worker to be killed started no trial")
    os.killpg(victim.pid, signal.SIGKILL)
    victim.communicate()
    killed_at = time.time()
    outs = _finish(workers[1:])
    wall, after_kill = time.time() - started, time.time() - killed_at
    for w, out in zip(workers[1:], outs, strict=True):
        assert w.returncode == 0, out[-4000:]
    print(f"\n3 workers, one on {victim_on} SIGKILLed mid-trial, {n_trials} trials: {wall:.0f} s wall")
    print(f"({after_kill:.0f} s after the kill)")

    study = optuna.load_study(study_name=study_name, storage=storage)
    number = int(running.data.tags[rf.TRIAL_NUMBER])
    dead = study.trials[number]
    assert dead.state == optuna.trial.TrialState.FAIL
    if elsewhere:
        assert study.user_attrs[f"dermsweep.void.{number}"] == "stale"
    else:
        assert study.user_attrs[f"dermsweep.void.{number}"] == "killed"
        assert "died" in dead.user_attrs[rf.FAILURE_REASON]
    counted = _counted(study)
    assert len(counted) == n_trials and all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
    assert [t.params for t in counted].count(dead.params) == 1  # its point was re-run, once
    runs = _runs(mlflow_server, experiment)
    _parent, children = _check_one_parent_with_every_child(runs, study)
    assert not [r for r in runs if r.info.status == "RUNNING"]
    orphan = _client(mlflow_server).get_run(running.info.run_id)
    assert orphan.info.status == "KILLED" and orphan.data.tags[rf.STATUS] == "killed"
    assert "died" in orphan.data.tags[rf.FAILURE_REASON]
