"""A finished trial's run keeps its final status: the sweep's orphan rule (a RUNNING child run whose trial is not
RUNNING belonged to a dead process) never applies to a trial asked after its snapshot of the study."""

from __future__ import annotations

from types import SimpleNamespace

from optuna.trial import TrialState

from dermsweep.sweep.parent_run import SweepParent
from dermsweep.tracking import run_format as rf


class _Client:
    def __init__(self, runs):
        self.runs = runs
        self.terminated: list[tuple[str, str]] = []

    def search_runs(self, *args, **kwargs):
        from mlflow.store.entities.paged_list import PagedList

        return PagedList(self.runs, None)  # one page

    def set_tag(self, *args):
        pass

    def set_terminated(self, run_id, status):
        self.terminated.append((run_id, status))


def _run(run_id: str, number: int):
    return SimpleNamespace(
        info=SimpleNamespace(run_id=run_id), data=SimpleNamespace(tags={rf.TRIAL_NUMBER: str(number)})
    )


def test_a_trial_started_after_the_snapshot_is_not_taken_for_an_orphan():
    # the study as read: trial 0 finished, trial 1 failed by a dead worker; trial 2 was asked (and its run started)
    # by another worker between reading the trials and searching the runs
    trials = [SimpleNamespace(number=0, state=TrialState.COMPLETE), SimpleNamespace(number=1, state=TrialState.FAIL)]
    study = SimpleNamespace(
        get_trials=lambda deepcopy=False, states=None: [t for t in trials if states is None or t.state in states]
    )
    client = _Client([_run("dead", 1), _run("new", 2)])
    SweepParent(client, "parent", "0").close_orphans(study)
    assert client.terminated == [("dead", "KILLED")]
