"""No run left RUNNING: processes killed with a real SIGKILL (a single train.py, a sweep on a journal file) are found
by the next command that opens the store, or by `dermsweep runs --reap`, and marked KILLED with the reason; the
rules behind it (dermsweep.liveness, tracking.run_owner, sweep.trial_owner) on their own."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from dermsweep import cli, liveness
from dermsweep.tracking import run_format as rf
from dermsweep.tracking import run_owner
from helpers.config import REPO, SMALLEST
from helpers.sweeper import APP, app_env
from helpers.waiting import wait_for

TIMEOUT = 900  # generous: CI shares 2 cores with whatever else runs


def _dead_pid() -> tuple[int, str]:
    """The pid and start time of a process that has just exited."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    time.sleep(0.2)
    started = liveness._started(child.pid)
    child.kill()
    child.wait()
    return child.pid, started


# ----------------------------------------------------------------------------------------------- the rules
def test_owner_verdicts():
    me = liveness.me()
    assert liveness.death(me) is None
    pid, started = _dead_pid()
    assert "died (its pid is gone)" in liveness.death(replace(me, pid=pid, started=started))
    assert "newer process" in liveness.death(replace(me, started="1"))  # this pid, another start time: recycled
    elsewhere = replace(me, machine="another-boot/pid:[1]")  # cannot be inspected: its heartbeat decides
    assert liveness.death(elsewhere, stale_after=60) is None
    assert "no heartbeat for" in liveness.death(replace(elsewhere, beat=time.time() - 61), stale_after=60)
    assert liveness.parse(me.to_json(trial_id=3)) == me
    assert liveness.parse("not json") is None and liveness.parse('{"pid": 1}') is None


def test_heartbeats_go_on_through_errors_and_stop_when_the_work_is_over():
    beats = liveness.Heartbeats(interval=0.05)
    calls: dict[str, int] = {"three": 0, "flaky": 0}

    def three() -> bool:
        calls["three"] += 1
        return calls["three"] < 3

    def flaky() -> bool:
        calls["flaky"] += 1
        if calls["flaky"] == 1:
            raise OSError("tracking store down for a moment")
        return False

    beats.add("three", three)
    beats.add("flaky", flaky)
    wait_for(lambda: not beats._beats, 10, "heartbeats did not stop")
    assert calls == {"three": 3, "flaky": 2}


def test_a_run_is_dead_only_when_all_its_owners_are():
    me = liveness.me()
    pid, started = _dead_pid()
    dead = replace(me, pid=pid, started=started)
    tags = {run_owner.owner_key(dead): dead.to_json()}
    assert "died" in run_owner.death(tags)
    assert run_owner.death({**tags, run_owner.owner_key(me): me.to_json()}) is None  # a sweep worker still alive
    assert run_owner.death({}) is None  # never claimed (older runs, other tools): never reaped
    assert run_owner.death({**tags, f"{rf.OWNER}.x.1": "garbage"}) is None


def test_fail_dead_on_a_journal_study(tmp_path):
    """A RUNNING trial whose sweep process died: failed, voided, its reason recorded, its point re-queued without
    the dead owner's record; records inherited from another trial or never refreshed do not kill."""
    import optuna

    from dermsweep.sweep import trial_owner
    from dermsweep.sweep.storage import open_storage

    warnings.simplefilter("ignore")
    study = optuna.create_study(study_name="j", storage=open_storage(f"journal:///{tmp_path}/j.log"))
    space = {"x": optuna.distributions.FloatDistribution(0, 1)}
    pid, started = _dead_pid()
    dead = replace(liveness.me(), pid=pid, started=started)
    killed = study.ask(space)
    trial_owner.claim(study, killed, beat_every=None)  # then overwritten, as by a sweep that has since died:
    study._storage.set_trial_user_attr(
        killed._trial_id, trial_owner.OWNER_ATTR, dead.to_json(trial_id=killed._trial_id, beat_every=5)
    )
    inherited = study.ask(space)  # a record made for another trial (a re-queued copy inherits user attrs)
    study._storage.set_trial_user_attr(
        inherited._trial_id, trial_owner.OWNER_ATTR, dead.to_json(trial_id=killed._trial_id, beat_every=5)
    )
    silent = study.ask(space)  # on another machine, never refreshed (beat_every 0): only its machine can tell
    far = replace(liveness.me(), machine="elsewhere", beat=time.time() - 3600)
    study._storage.set_trial_user_attr(
        silent._trial_id, trial_owner.OWNER_ATTR, far.to_json(trial_id=silent._trial_id, beat_every=0)
    )
    quiet = study.ask(space)  # on another machine, refreshed every 5 s, but not for an hour: dead
    study._storage.set_trial_user_attr(
        quiet._trial_id, trial_owner.OWNER_ATTR, far.to_json(trial_id=quiet._trial_id, beat_every=5)
    )
    alive = study.ask(space)
    trial_owner.claim(study, alive, beat_every=None)

    assert trial_owner.fail_dead(study, stale_after=10, max_retry=2) == [killed.number, quiet.number]
    assert trial_owner.fail_dead(study, stale_after=10, max_retry=2) == []  # once only
    study = optuna.load_study(study_name="j", storage=open_storage(f"journal:///{tmp_path}/j.log"))
    t = study.trials[killed.number]
    assert t.state == optuna.trial.TrialState.FAIL and study.user_attrs[f"dermsweep.void.{t.number}"] == "killed"
    assert t.user_attrs[rf.FAILURE_REASON].startswith("killed: process") and "died" in t.user_attrs[rf.FAILURE_REASON]
    assert "no heartbeat for" in study.trials[quiet.number].user_attrs[rf.FAILURE_REASON]
    queued, _ = study.get_trials(states=(optuna.trial.TrialState.WAITING,))
    assert queued.params == t.params and queued.system_attrs["failed_trial"] == t.number
    assert trial_owner.OWNER_ATTR not in queued.user_attrs and rf.FAILURE_REASON not in queued.user_attrs
    running = {x.number for x in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))}
    assert running == {inherited.number, silent.number, alive.number}


def test_runs_reap_lists_what_it_marked_and_leaves_live_runs(tmp_path, capsys):
    import mlflow

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("reap")
    pid, started = _dead_pid()
    dead = replace(liveness.me(), pid=pid, started=started)
    gone = client.create_run(exp, run_name="gone", tags={run_owner.owner_key(dead): dead.to_json()}).info.run_id
    live = client.create_run(exp, run_name="live").info.run_id
    run_owner.claim(client, live)
    legacy = client.create_run(exp, run_name="legacy").info.run_id  # no owner tag: never reaped

    assert _cli(capsys, "runs", "--tracking-uri", uri, "--reap", "--stale-after", "-1")[0] == 2
    rc, out, err = _cli(capsys, "runs", "--tracking-uri", uri, "--reap")
    assert rc == 0, err
    assert f"run {gone} (gone): KILLED" in out and f"process {pid} on" in out and "died" in out
    assert {r: client.get_run(r).info.status for r in (gone, live, legacy)} == {
        gone: "KILLED",
        live: "RUNNING",
        legacy: "RUNNING",
    }
    rc, out, _ = _cli(capsys, "runs", "--tracking-uri", uri, "--reap")
    assert rc == 0 and "nothing left RUNNING by a dead process" in out
    client.set_terminated(live)  # its heartbeat stops at the next beat


# ----------------------------------------------------------------------------------------------- real SIGKILLs
def _runs_in(db: Path) -> list[tuple[str, str]]:
    """(run id, status) of the runs that have an owner, read-only with sqlite3 (no MLflow client: it would race the
    killed process's schema creation)."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute(
                "SELECT DISTINCT r.run_uuid, r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                f"WHERE t.key LIKE '{rf.OWNER}.%'"
            ).fetchall()
    except sqlite3.Error:
        return []


def _cli(capsys, *argv) -> tuple[int, str, str]:
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.mark.slow
@pytest.mark.faults
def test_killed_single_run_is_marked_killed_by_the_next_command(tmp_path, capsys, caplog):
    import mlflow

    db = tmp_path / "mlflow.db"
    proc = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "train.py"),
            *SMALLEST,
            "model.height=32",
            "model.width=32",
            "trainer.frozen.epochs=50",
            "trainer.finetune.epochs=0",
            "tracking.log_model=false",
            f"tracking.uri=sqlite:///{db}",
            f"hydra.run.dir={tmp_path}/run",
            f"cache_dir={tmp_path}/cache",
        ],
        cwd=tmp_path,
        env=app_env(),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ((run_id, status),) = wait_for(lambda: _runs_in(db), 600, "no run was started")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert status == "RUNNING" and _runs_in(db) == [(run_id, "RUNNING")]  # what SIGKILL used to leave for ever

    rc, out, err = _cli(capsys, "runs", "--tracking-uri", f"sqlite:///{db}", "--all")  # any command that opens it
    assert rc == 0, err
    assert f"run {run_id} " in caplog.text and "marked KILLED" in caplog.text  # a warning on stderr
    run = mlflow.MlflowClient(f"sqlite:///{db}").get_run(run_id)
    assert run.info.status == "KILLED" and run.data.tags[rf.STATUS] == "killed"
    reason = run.data.tags[rf.FAILURE_REASON]
    assert f"process {proc.pid} on " in reason and "died" in reason


@pytest.mark.slow
@pytest.mark.faults
def test_killed_sweep_on_a_journal_file_is_reaped_then_resumed(tmp_path, capsys):
    """SIGKILL a sweep (journal storage: no Optuna heartbeat) while trial 1 runs: `dermsweep runs --reap` fails
    that trial (not counted, point re-queued) and marks its run and the parent KILLED; the same sweep command then
    finishes exactly n_trials and re-runs the killed point once."""
    import mlflow
    import optuna

    args = [
        "-m",
        "hydra/sweeper=optuna",
        f"hydra.run.dir={tmp_path}/run",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"tracking.artifact_root={tmp_path}/artifacts",
        f"hydra.sweeper.storage=journal:///{tmp_path}/optuna.log",
        "hydra.sweeper.study_name=s",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.plots=false",
        "hydra.sweeper.validate=null",
        "x=interval(0, 1)",
        "y=choice(0.2, 0.6, 0.9)",
    ]
    proc = subprocess.Popen(
        [sys.executable, str(APP), *args, "sleep=1.0", f"hydra.sweep.dir={tmp_path}/ms1"],
        cwd=tmp_path,
        env=app_env(),
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + TIMEOUT
        for line in proc.stdout:
            if "Launching trials [1]" in line or time.time() > deadline:
                break
        time.sleep(1.5)  # trial 1 is training
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    from dermsweep.sweep.storage import open_storage

    storage = open_storage(f"journal:///{tmp_path}/optuna.log")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.load_study(study_name="s", storage=storage)
    assert study.trials[1].state == optuna.trial.TrialState.RUNNING  # what a journal file used to keep for ever

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    rc, out, err = _cli(capsys, "runs", "--tracking-uri", uri, "--reap", "--json")
    assert rc == 0, err
    report = json.loads(out)
    assert report["trials"] == [{"study_name": "s", "number": 1}]
    assert {r["role"] for r in report["runs"]} == {"trial", "sweep"}
    client = mlflow.MlflowClient(uri)
    for r in report["runs"]:
        run = client.get_run(r["run_id"])
        assert run.info.status == "KILLED" and run.data.tags[rf.STATUS] == "killed"
        assert f"process {proc.pid} on " in run.data.tags[rf.FAILURE_REASON]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.load_study(study_name="s", storage=storage)
    killed = study.trials[1]
    assert killed.state == optuna.trial.TrialState.FAIL and study.user_attrs["dermsweep.void.1"] == "killed"
    assert "died" in killed.user_attrs[rf.FAILURE_REASON]

    done = subprocess.run(
        [sys.executable, str(APP), *args, f"hydra.sweep.dir={tmp_path}/ms2"],
        cwd=tmp_path,
        env=app_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = optuna.load_study(study_name="s", storage=storage)
    counted = [t for t in study.trials if f"dermsweep.void.{t.number}" not in study.user_attrs]
    assert len(counted) == 3 and all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)
    assert [t.params for t in counted].count(killed.params) == 1
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    assert not [r for r in runs if r.info.status == "RUNNING"]
    (parent,) = [r for r in runs if r.data.tags.get(rf.ROLE) == "sweep"]
    assert parent.info.status == "FINISHED"
