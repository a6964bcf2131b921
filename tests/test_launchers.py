"""A real launcher beyond joblib: trials run through hydra-submitit-launcher's local executor (one process per job,
as on a SLURM cluster with `hydra/launcher=submitit_slurm`), with pruning and resume working as with the basic
launcher. Uses the stand-in app of the sweeper tests (helpers.sweeper, no TensorFlow)."""

from __future__ import annotations

import pytest

from dermsweep.tracking import run_format as rf
from helpers.sweeper import load_study, optuna_args, run_app, runs_of

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install -e '.[submitit]'")

SUBMITIT = [
    "hydra/launcher=submitit_local",
    "hydra.launcher.timeout_min=10",
    "hydra.sweeper.n_jobs=2",  # two jobs at a time, each in its own process
    "prune_trials=[1]",
    "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
    "+hydra.sweeper.pruner.lower=-10",
]
# More time than helpers.sweeper's default: every job is a new process (seconds each on a busy machine).
TIMEOUT = 900


@pytest.mark.slow
def test_submitit_local_launcher_prunes_and_resumes(ws):
    run_app(ws, optuna_args(ws, 2, *SUBMITIT, sweep_dir="ms1"), timeout=TIMEOUT)  # one batch of two jobs
    study = load_study(ws)
    assert {t.number: t.state.name for t in study.trials} == {0: "COMPLETE", 1: "PRUNED"}
    first = {t.number: t.params for t in study.trials}
    assert list((ws / "ms1" / ".submitit").glob("*/*_log.out")), "submitit ran no job"

    # the same command, one more trial: resumes
    run_app(ws, optuna_args(ws, 3, *SUBMITIT, sweep_dir="ms2"), timeout=TIMEOUT)
    study = load_study(ws)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
    assert {n: study.trials[n].params for n in first} == first  # nothing re-run

    _, runs = runs_of(ws)
    (parent,) = [r for r in runs if r.data.tags.get(rf.ROLE) == "sweep"]
    children = {int(r.data.tags[rf.TRIAL_NUMBER]): r for r in runs if r.data.tags.get(rf.PARENT_RUN_ID)}
    assert sorted(children) == [0, 1, 2] and parent.info.status == "FINISHED"
    assert children[1].info.status == "KILLED" and children[1].data.tags[rf.STATUS] == "pruned"
    # each job ran in a process of its own, not in the sweeper's: its run's owner tag names that process
    sweepers = {k for k in parent.data.tags if k.startswith(rf.OWNER + ".")}
    jobs = {k for r in children.values() for k in r.data.tags if k.startswith(rf.OWNER + ".")}
    assert len(jobs) == 3 and not jobs & sweepers
