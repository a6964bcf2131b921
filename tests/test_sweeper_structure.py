"""The sweeper's structure and its round-2 fixes: Optuna's private API in one wrapper, void trials and the candidate
rule each with one owner, trials a dead worker asked for and never claimed, storage paths a reaper can open, the
parent run made by the study's creator without a pause, its settings as params, and what the console shows.
"""

from __future__ import annotations

import datetime
import logging
import os
import re
import shutil
import subprocess
import sys
import warnings

import pytest

from dermsweep.tracking import run_format as rf
from helpers.config import REPO
from helpers.sweeper import APP

SRC = REPO / "src"
# Optuna's private names dermsweep needs: attributes of its objects and its private modules
PRIVATE_OPTUNA = re.compile(
    r"\._storage\b|\._trial_id\b|\._suggest\b|\._backend\b|\._study_id\b|\._cached_frozen_trial\b"
    r"|optuna(\.\w+)*\._\w+|from optuna(\.\w+)*\._\w+ import|\.system_attrs\b"
)


def test_private_optuna_api_only_in_its_wrapper():
    wrapper = SRC / "dermsweep" / "sweep" / "optuna_private.py"
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path == wrapper or "node_modules" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if PRIVATE_OPTUNA.search(line.split("#", 1)[0]):
                offenders.append(f"{path.relative_to(SRC)}:{number}: {line.strip()}")
    assert not offenders, "Optuna's private API outside dermsweep/sweep/optuna_private.py:\n" + "\n".join(offenders)
    assert PRIVATE_OPTUNA.search(wrapper.read_text())  # the pattern does find what the wrapper holds


def test_void_marks_have_one_owner():
    """Only sweep/void.py spells the mark; everything else marks and reads through it."""
    spelled = [p for p in SRC.rglob("*.py") if '"dermsweep.void.' in p.read_text()]
    assert [p.name for p in spelled] == ["void.py"]


# ----------------------------------------------------------------------------------------------- grammar, console
@pytest.mark.parametrize(
    "line, wanted",
    [
        ("x=interval(0.5, 0.1)", "lower bound is above the upper bound"),
        ("x=range(10, 1)", "lower bound is above the upper bound"),
        ("x=tag(log, interval(0, 1))", "log scale needs a lower bound above 0"),
    ],
)
def test_bad_range_is_a_one_line_settings_error(line, wanted):
    from hydra.errors import CompactHydraException

    from hydra_plugins.dermsweep_optuna_sweeper._search_space import parse_search_space

    with pytest.raises(CompactHydraException) as caught:
        parse_search_space(None, [line])
    assert str(caught.value).startswith(line + ": ") and wanted in str(caught.value)
    assert isinstance(caught.value, ValueError) and "\n" not in str(caught.value)


def test_reversed_range_in_a_sweep_prints_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            str(APP),
            "-m",
            "hydra/sweeper=optuna",
            f"hydra.sweep.dir={tmp_path / 'ms'}",
            "hydra.sweeper.validate=null",
            "x=interval(0.5, 0.1)",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        env={k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"},
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "x=interval(0.5, 0.1): the lower bound is above the upper bound" in proc.stderr


def test_launch_lines_hide_the_trial_link_overrides():
    from dermsweep.sweep import trial_link
    from hydra_plugins.dermsweep_optuna_sweeper._console import HideLinkOverrides
    from hydra_plugins.dermsweep_optuna_sweeper._search_space import env_overrides

    env = trial_link.job_env("my 'study'", "sqlite:////tmp/o.db", 12, 3, "abc123")
    line = "\t#3 : x=0.5 y=choice tracking.uri=sqlite:///m.db " + " ".join(env_overrides(env))
    record = logging.LogRecord("hydra", logging.INFO, __file__, 1, line, (), None)
    assert HideLinkOverrides().filter(record)
    assert record.getMessage() == "\t#3 : x=0.5 y=choice tracking.uri=sqlite:///m.db"


def test_a_finished_trial_line_has_value_best_count_and_time():
    import optuna
    from optuna.trial import TrialState

    from dermsweep.sweep import trial_link
    from hydra_plugins.dermsweep_optuna_sweeper._outcome import trial_line

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_score"])
    first = study.ask()
    study.tell(first, 0.75)
    second = study.ask()
    study.tell(second, 0.5)
    line = trial_line(study, second, TrialState.COMPLETE, 2, 3, 64.2)
    assert line == "trial 1 COMPLETE  val_score=0.5  best 0.75 (trial 0)  2/3  1m04s"

    # Pruned: an epoch trial says its step; a cross-validation trial (steps are folds) says which fold, 1-based.
    epochs = study.ask()
    epochs.report(0.4, 3)
    study.tell(epochs, state=TrialState.PRUNED)
    assert "trial 2 PRUNED  at step 3 (0.4)  best 0.75" in trial_line(study, epochs, TrialState.PRUNED, 3, 5, 9)
    folds = study.ask()
    folds.report(0.535, 0)
    folds.set_user_attr(trial_link.FOLDS_ATTR, 3)
    study.tell(folds, state=TrialState.PRUNED)
    line = trial_line(study, folds, TrialState.PRUNED, 4, 5, 245)
    assert line == "trial 3 PRUNED  after fold 1 of 3 (mean so far 0.535)  best 0.75 (trial 0)  4/5  4m05s"


# ----------------------------------------------------------------------------------------------- dead workers
def test_a_trial_asked_and_never_claimed_is_reaped(tmp_path, monkeypatch):
    """A worker died between study.ask() and claiming: no owner record, no heartbeat (journal file). fail_dead
    fails and voids it once it has waited UNCLAIMED_AFTER_S, and its enqueued configuration goes back."""
    import optuna

    from dermsweep.sweep import trial_owner
    from dermsweep.sweep.storage import open_storage

    study = optuna.create_study(study_name="j", storage=open_storage(f"journal://{tmp_path}/j.log"))
    study.enqueue_trial({"x": 0.25}, user_attrs={rf.WARM_START: "warm_start[0]"})
    asked = study.ask()  # ... and the worker died here
    assert trial_owner.fail_dead(study, None, 2) == []  # just asked: its worker may be about to claim it
    later = datetime.datetime.now() + datetime.timedelta(seconds=trial_owner.UNCLAIMED_AFTER_S + 1)
    frozen = study.get_trials(deepcopy=False)[0]
    assert "never claimed" in (trial_owner.unclaimed(frozen, now=later) or "")
    monkeypatch.setattr(trial_owner, "UNCLAIMED_AFTER_S", 0.0)
    assert trial_owner.fail_dead(study, None, 2) == [asked.number]
    study = optuna.load_study(study_name="j", storage=open_storage(f"journal://{tmp_path}/j.log"))
    dead, requeued = study.trials
    assert dead.state.name == "FAIL" and study.user_attrs[f"dermsweep.void.{dead.number}"] == "unclaimed"
    assert dead.user_attrs[rf.FAILURE_REASON].startswith("unclaimed: asked")
    assert requeued.state.name == "WAITING" and requeued.user_attrs[rf.WARM_START] == "warm_start[0]"
    again = study.ask()
    assert again.number == requeued.number  # the queue hands the configuration out again


def test_storage_urls_are_made_absolute(tmp_path):
    from dermsweep.sweep.storage import absolute_url

    assert absolute_url("sqlite:///mlruns/optuna.db", tmp_path) == f"sqlite:///{tmp_path}/mlruns/optuna.db"
    assert absolute_url(f"sqlite:///{tmp_path}/o.db") == f"sqlite:///{tmp_path}/o.db"
    assert absolute_url("journal://runs/o.log", tmp_path) == f"journal://{tmp_path}/runs/o.log"
    assert absolute_url("postgresql://u:p@h/db") == "postgresql://u:p@h/db"
    assert absolute_url(None) is None and absolute_url("memory") == "memory"


@pytest.fixture
def client(tmp_path, mlflow_db):
    import mlflow

    shutil.copy(mlflow_db, tmp_path / "mlflow.db")
    return mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")


def test_reaper_never_creates_a_store_it_cannot_find(tmp_path, client, monkeypatch):
    """A parent that recorded a relative `sqlite:///mlruns/optuna.db` (older sweeps): the reaper, started in
    another directory, says where to run it instead of opening (and so creating) an empty store there."""
    from dermsweep.sweep.reaper import reap

    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    for url in ("sqlite:///mlruns/optuna.db", f"sqlite:///{tmp_path}/gone.db"):
        run = client.create_run(exp, tags={rf.ROLE: "sweep", rf.STUDY_NAME: url[-9:], rf.OPTUNA_STORAGE: url})
        client.set_terminated(run.info.run_id)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    report = reap(client)
    assert not (elsewhere / "mlruns").exists() and not (tmp_path / "gone.db").exists()
    assert any("relative path" in s and "directory the sweep ran in" in s for s in report.skipped), report.skipped
    assert any("gone.db: no such file" in s for s in report.skipped), report.skipped


# ----------------------------------------------------------------------------------------------- parent runs
def test_the_study_creator_makes_the_parent_without_a_pause(tmp_path, client, monkeypatch):
    """One process creates a study (the storage refuses a second); it alone makes the parent of the new study, at
    once. A worker that joined finds it; a resumed sweep's changed settings are said in the description."""
    from dermsweep.sweep import parent_run
    from hydra_plugins.dermsweep_optuna_sweeper import _study

    settings = _study.StudySettings("s", f"journal://{tmp_path}/o.log", ["maximize"], None, ["val_score"])
    first = _study.open_study(settings, {"_target_": "optuna.samplers.RandomSampler"}, {})
    second = _study.open_study(settings, {"_target_": "optuna.samplers.RandomSampler"}, {})
    assert first.created and not second.created
    assert first.study.metric_names == ["val_score"]  # optuna-dashboard shows the name, not "Objective 0"

    def no_pause(seconds):
        raise AssertionError(f"slept {seconds} s")

    monkeypatch.setattr(parent_run.time, "sleep", no_pause)
    uri = client.tracking_uri
    made = parent_run.SweepParent.open(
        uri, "e", None, "s", params={"sweeper.n_trials": "3"}, description="first", created_study=True
    )
    joined = parent_run.SweepParent.open(uri, "e", None, "s", created_study=False, fresh_study=True)
    assert joined.run_id == made.run_id
    resumed = parent_run.SweepParent.open(
        uri, "e", None, "s", params={"sweeper.n_trials": "6", "search.x": "interval(0, 1)"}, description="again"
    )
    run = client.get_run(resumed.run_id)
    assert resumed.run_id == made.run_id
    assert run.data.params == {"sweeper.n_trials": "3", "search.x": "interval(0, 1)"}  # MLflow keeps the first
    assert (
        run.data.tags[rf.DESCRIPTION].startswith("again")
        and "sweeper.n_trials: 3 -> 6" in run.data.tags[rf.DESCRIPTION]
    )


# ----------------------------------------------------------------------------------------------- candidates
def test_one_candidate_rule_every_page(tmp_path, client, monkeypatch):
    """Ranking and warm start take the same runs (no sweep, multirun or evaluation run) from every page."""
    from dermsweep.shipping.ranking import collect_runs
    from dermsweep.sweep.warm_start_runs import best_runs
    from dermsweep.tracking import candidates

    assert [r for r in rf.ROLES if rf.is_candidate({rf.ROLE: r})] == ["single", "trial", "ensemble", "cv"]
    assert rf.is_candidate({})  # a run another tool recorded
    exp = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    for i, role in enumerate(["trial"] * 5 + ["sweep", "multirun", "evaluation"]):
        run = client.create_run(exp, tags={rf.ROLE: role})
        client.log_metric(run.info.run_id, "final_val/balanced_accuracy", 0.1 * i)
        client.set_terminated(run.info.run_id)
    monkeypatch.setattr(candidates, "PAGE_SIZE", 2)
    monkeypatch.chdir(tmp_path)  # ranking asks MLflow's default store which runs have a model
    monkeypatch.setenv("MLFLOW_TRACKING_URI", client.tracking_uri)
    table = collect_runs(client, "e")
    assert len(table.rows) == 5 and {r.role for r in table.rows} == {"trial"}
    warm = best_runs(client.tracking_uri, "e", "val_balanced_accuracy", "maximize", 10)
    assert sorted(r for r, _, _ in warm) == sorted(r.run_id for r in table.rows)
