"""Issue 12, the sweeper's side of a search that learns on real data: a time budget, warm start (the sweep file's
configurations and an earlier experiment's best runs), time to quality on the parent run, and multi-fidelity
pruning (Hyperband, successive halving) over dermsweep's epoch reports.

Pure functions are tested in-process; the end-to-end tests run the stand-in app (tests/sweeper_app, no TensorFlow)
in subprocesses, as tests/test_sweeper.py does, with helpers.sweeper and the `ws` fixture.
"""

from __future__ import annotations

import csv
import datetime
import json
import logging
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from dermsweep.tracking import run_format as rf
from helpers.sweeper import load_study, mlflow_client, optuna_args, run_app, runs_of

HYPERBAND = [
    "hydra.sweeper.pruner._target_=optuna.pruners.HyperbandPruner",
    "+hydra.sweeper.pruner.min_resource=1",
    "+hydra.sweeper.pruner.reduction_factor=2",
]
# dermsweep's task reports epochs 1..N (frozen phase first): the stand-in does the same with first_step=1
EPOCHS = ["epochs=4", "first_step=1"]
GOOD, MID, BAD = {"x": 0.3, "y": 0.6}, {"x": 0.5, "y": 0.9}, {"x": 0.95, "y": 0.2}


def warm(*entries: dict) -> str:
    return (
        "hydra.sweeper.warm_start=["
        + ",".join("{" + ",".join(f"{k}:{v}" for k, v in e.items()) + "}" for e in entries)
        + "]"
    )


def parent_of(ws: Path):
    client, runs = runs_of(ws)
    (parent,) = [r for r in runs if r.data.tags.get(rf.ROLE) == "sweep"]
    return client, parent


def by_number(study) -> dict:
    return {t.number: t for t in study.trials}


def spec_of(study) -> dict:
    from dermsweep.sweep import trial_link

    return json.loads(study.user_attrs[trial_link.PRUNER_ATTR])


# ----------------------------------------------------------------------------------------------- time budget
@pytest.mark.parametrize(
    "value, seconds",
    [(30, 30.0), (2.5, 2.5), ("600", 600.0), ("90m", 5400.0), ("3h", 10800.0), ("1h30m", 5400.0), ("45 s", 45.0)],
)
def test_timeout_values(value, seconds):
    from hydra_plugins.dermsweep_optuna_sweeper._options import parse_timeout

    assert parse_timeout(value) == seconds
    assert parse_timeout(None) is None


@pytest.mark.parametrize("value", [0, -5, "soon", "3 days", True, "1h tomorrow"])
def test_timeout_refuses_nonsense(value):
    from hydra_plugins.dermsweep_optuna_sweeper._options import parse_timeout

    with pytest.raises(ValueError, match="hydra.sweeper.timeout"):
        parse_timeout(value)


def test_no_trial_budget_needs_a_time_budget():
    from hydra_plugins.dermsweep_optuna_sweeper._impl import OptunaSweeperImpl

    kw = dict(sampler=None, pruner=None, direction="maximize", study_name="s", storage=None, n_jobs=1)
    with pytest.raises(ValueError, match="needs a time budget"):
        OptunaSweeperImpl(n_trials=None, **kw)
    assert OptunaSweeperImpl(n_trials=None, timeout="2h", **kw).timeout == 7200.0


def test_timeout_stops_launching_and_the_parent_says_why(ws):
    """n_trials=null, 2 s of sweep time: trials of ~1 s run until the budget is spent, the one running then
    finishes; the parent run's stop reason names the budget. The same command again launches nothing (the budget is
    the study's, across resumes); a larger budget goes on."""
    args = ["sleep=0.3", "hydra.sweeper.n_trials=null", "hydra.sweeper.timeout=2"]
    proc = run_app(ws, optuna_args(ws, 1, *args, sweep_dir="ms1"))
    study = load_study(ws)
    first = len(study.trials)
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    took = [(t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials]
    assert sum(took[:-1]) < 2.0 <= sum(took)  # the last trial was launched before the budget was spent ...
    assert "Sweep stopped: timeout" in proc.stdout  # ... and no trial after it
    _, parent = parent_of(ws)
    assert parent.data.tags[rf.STOP_REASON].startswith("timeout:")
    assert parent.data.tags[rf.N_TRIALS] == "unlimited" and parent.data.tags[rf.TIMEOUT] == "2.0s"
    assert parent.data.metrics[rf.ELAPSED_MINUTES] >= 2.0 / 60

    again = run_app(ws, optuna_args(ws, 1, *args, sweep_dir="ms2"))
    assert "Launching trials" not in again.stdout and "Sweep stopped: timeout" in again.stdout
    assert len(load_study(ws).trials) == first


# ----------------------------------------------------------------------------------------------- warm start
def space():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    return {
        "model": CategoricalDistribution(["mobilenet_v1", "mobilenet_v2"]),
        "model.alpha": CategoricalDistribution([0.5, 0.75, 1.0]),
        "trainer.finetune.lr": FloatDistribution(1e-6, 1e-3, log=True),
        "model.dropout": FloatDistribution(0.0, 0.5, step=0.1),
        "trainer.batch_size": IntDistribution(16, 64, step=16),
        "+extra": CategoricalDistribution([True, False]),
    }


def test_warm_start_entries_are_checked_and_typed(caplog):
    from hydra_plugins.dermsweep_optuna_sweeper._warm_start import check_entries

    log = logging.getLogger("test")
    got = check_entries(
        [
            {"model": "mobilenet_v2", "model.alpha": 1, "trainer.finetune.lr": "2e-4", "trainer.batch_size": 32.0},
            {"model.dropout": 0.3, "extra": "True", "seed": 7},  # extra: a +key's name; seed: fixed below
        ],
        space(),
        {"seed": "42"},
        log,
    )
    assert got == [
        (
            "warm_start[0]",
            {"model": "mobilenet_v2", "model.alpha": 1.0, "trainer.finetune.lr": 2e-4, "trainer.batch_size": 32},
        ),
        ("warm_start[1]", {"model.dropout": 0.3, "+extra": True}),
    ]
    assert type(got[0][1]["trainer.batch_size"]) is int
    assert "seed=7 ignored: the sweep fixes seed=42" in caplog.text


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"model": "resnet50"}, r"warm_start\[0\]: model='resnet50': 'resnet50' is not one of choice\(mobilenet_v1"),
        ({"trainer.finetune.lr": 0.1}, r"0.1 is outside tag\(log, interval\(1e-06, 0.001\)\)"),
        ({"model.dropout": 0.25}, r"not on the steps of range\(0.0, 0.5, step=0.1\)"),
        ({"trainer.batch_size": 24}, r"not on the steps of range\(16, 64, 16\)"),
        ({"trainer.batch_size": 32.5}, "not an integer"),
        ({"model.alhpa": 0.5}, r"'model.alhpa' is not a key of the search space \(extra, model, model.alpha"),
    ],
)
def test_warm_start_entries_refuse_what_does_not_fit(entry, message):
    from hydra_plugins.dermsweep_optuna_sweeper._warm_start import check_entries

    with pytest.raises(ValueError, match=message):
        check_entries([entry], space(), {}, logging.getLogger("test"))


def test_warm_start_must_be_a_list_of_mappings():
    from hydra_plugins.dermsweep_optuna_sweeper._warm_start import check_entries

    for bad in ({"model": "mobilenet_v1"}, "mobilenet_v1", [["model", "mobilenet_v1"]]):
        with pytest.raises(ValueError, match="warm_start"):
            check_entries(bad, space(), {}, logging.getLogger("test"))


def test_warm_start_from_maps_logged_params_onto_the_space():
    """Params as training/task.py logs them (tracking.artifacts.flatten: dotted keys, strings; a config group's
    choice as <group>.name)."""
    from hydra_plugins.dermsweep_optuna_sweeper._warm_start import from_run, from_spec

    params = {
        "model.name": "mobilenet_v2",
        "model.alpha": "0.75",
        "trainer.finetune.lr": "0.0002",
        "model.dropout": "0.45",  # not on this space's steps
        "trainer.batch_size": "32",
        "augment.name": "light",  # not in the space: ignored
    }
    entry, notes = from_run(params, space())
    assert entry == {
        "model": "mobilenet_v2",
        "model.alpha": 0.75,
        "trainer.finetune.lr": 2e-4,
        "trainer.batch_size": 32,
    }
    assert any(n.startswith("model.dropout=0.45: ") and "dropped" in n for n in notes)
    assert "extra: not logged by the run (sampled)" in notes

    assert from_spec("old") == {**from_spec({"experiment": "old"}), "experiment": "old"}
    assert from_spec({"experiment": "old"})["top_k"] == 3
    for bad, message in (({"top_k": 2}, "needs an experiment"), ({"experiment": "e", "topk": 2}, "unknown key")):
        with pytest.raises(ValueError, match=message):
            from_spec(bad)


def test_best_runs_of_an_earlier_experiment(ws):
    """Top k FINISHED runs by the objective (any spelling: val_x finds final_val/x, legacy final_val_x or the exact
    name); sweep parents, failed runs and runs without the metric are left out."""
    from dermsweep.sweep.warm_start_runs import best_runs

    client = mlflow_client(ws)
    exp = client.create_experiment("earlier", artifact_location=(ws / "art").as_uri())

    def make(value, name="final_val/balanced_accuracy", status="FINISHED", role="trial"):
        run = client.create_run(exp, tags={rf.ROLE: role})
        client.log_param(run.info.run_id, "model.alpha", str(value))
        if value is not None:
            client.log_metric(run.info.run_id, name, value)
        client.set_terminated(run.info.run_id, status=status)
        return run.info.run_id

    a, b, c = make(0.6), make(0.8), make(0.7, name="final_val_balanced_accuracy")  # c: the legacy spelling
    make(0.99, role="sweep"), make(0.95, status="FAILED"), make(None)
    got = best_runs(f"sqlite:///{ws / 'mlflow.db'}", "earlier", "val_balanced_accuracy", "maximize", 2)
    assert [(r, v) for r, v, _ in got] == [(b, 0.8), (c, 0.7)]
    assert got[0][2]["model.alpha"] == "0.8"
    low = best_runs(f"sqlite:///{ws / 'mlflow.db'}", "earlier", "final_val/balanced_accuracy", "minimize", 1)
    assert [r for r, _, _ in low] == [a]
    with pytest.raises(ValueError, match="experiment 'nope' not found"):
        best_runs(f"sqlite:///{ws / 'mlflow.db'}", "nope", "val_balanced_accuracy", "maximize", 1)


def test_warm_start_enqueued_once_and_counted(ws):
    """The sweep file's configuration runs first, then the best two runs of an earlier experiment (a value outside
    this space is dropped with a logged line and sampled instead); they count towards n_trials. A resume does not
    enqueue them again."""
    client = mlflow_client(ws)
    exp = client.create_experiment("earlier", artifact_location=(ws / "art").as_uri())
    earlier = {}
    for x, y, value in ((0.1, 0.9, 0.5), (0.2, 0.7, 0.9), (0.4, 0.2, 0.8)):  # y=0.7: not a choice here
        run = client.create_run(exp, tags={rf.ROLE: "trial"})
        for key, val in {"x": x, "y": y, "epochs": 5, "sleep": 0.0}.items():
            client.log_param(run.info.run_id, key, str(val))
        client.log_metric(run.info.run_id, "val_score", value)
        client.set_terminated(run.info.run_id)
        earlier[value] = run.info.run_id
    args = [warm({"x": 0.35, "y": 0.9}), "hydra.sweeper.warm_start_from={experiment:earlier,top_k:2}"]
    proc = run_app(ws, optuna_args(ws, 3, *args, sweep_dir="ms1"))
    trials = by_number(load_study(ws))
    assert trials[0].params == {"x": 0.35, "y": 0.9}
    assert trials[0].user_attrs[rf.WARM_START] == "warm_start[0]"
    assert trials[1].params["x"] == 0.2 and trials[1].user_attrs[rf.WARM_START] == f"run {earlier[0.9]}"
    assert trials[2].params == {"x": 0.4, "y": 0.2} and trials[2].user_attrs[rf.WARM_START] == f"run {earlier[0.8]}"
    line = next(ln for ln in proc.stdout.splitlines() if f"warm start from run {earlier[0.9]}" in ln)
    assert "(val_score=0.9): {'x': 0.2}; y=0.7: '0.7' is not one of choice(0.2, 0.6, 0.9) (dropped, sampled)" in line
    assert line.endswith("not searched here, this sweep's value kept: epochs (run 5, here 3)")  # sleep: the same
    assert len(trials) == 3  # n_trials=3: the warm start took all three

    again = run_app(ws, optuna_args(ws, 4, *args, sweep_dir="ms2"))
    assert "warm start: this study was seeded before" in again.stdout
    study = load_study(ws)
    assert len(study.trials) == 4 and rf.WARM_START not in study.trials[3].user_attrs


def test_invalid_warm_start_fails_before_the_study_exists(ws):
    """Each configuration goes through the pre-flight validate (here the stand-in's rule x + y <= 1.5, which
    every end of the space passes on its own)."""
    entries = warm({"x": 0.2, "y": 0.9}, {"x": 0.95, "y": 0.9})
    proc = run_app(ws, optuna_args(ws, 3, entries, "hydra.sweeper.validate=my_app.check"), check=False)
    assert proc.returncode != 0
    assert "hydra.sweeper.warm_start[1] (x=0.95 y=0.9): x + y must not exceed 1.5" in proc.stderr
    import optuna

    assert not (ws / "optuna.db").exists() or not optuna.get_all_study_names(f"sqlite:///{ws / 'optuna.db'}")


def test_second_copy_of_a_warm_start_is_voided_not_run():
    """Two workers opening a fresh study at the same moment may both enqueue the warm start: the copy asked later
    is a duplicate (released without requeue); after an interruption, the requeued original is not."""
    import optuna

    from dermsweep.sweep.warm_start_runs import WARM_START_ATTR
    from hydra_plugins.dermsweep_optuna_sweeper._slots import duplicate_warm_start, release

    study = optuna.create_study(direction="maximize")
    for _ in range(2):  # two workers
        study.enqueue_trial({"x": 0.5}, user_attrs={WARM_START_ATTR: "warm_start[0]"})
    dist = {"x": optuna.distributions.FloatDistribution(0, 1)}
    first = study.ask(dist)
    assert not duplicate_warm_start(study, first)
    copy = study.ask(dist)
    assert duplicate_warm_start(study, copy)  # trial 0 runs with the same label
    release(study, copy, reason="duplicate", requeue=False)
    release(study, first, reason="interrupted")  # Ctrl-C: requeued with its label
    requeued = study.ask(dist)
    assert requeued.params == {"x": 0.5} and requeued.user_attrs[WARM_START_ATTR] == "warm_start[0]"
    assert not duplicate_warm_start(study, requeued)  # the interrupted original and the copy are void
    assert not [t for t in study.trials if t.state.name == "WAITING"]


# ----------------------------------------------------------------------------------------------- time to quality
def _study_with_history():
    """Trials with known times: 0 [0, 10] s, 1 [5, 20] (overlaps 0), a gap (the sweep was resumed later),
    2 [100, 110] pruned, 3 [110, 130] failed, 4 [130, 150] complete, 5 stale (voided), 6 still running."""
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    t0 = datetime.datetime(2026, 1, 1, 12, 0, 0)
    study = optuna.create_study(direction="maximize", study_name="ttq")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["val_score"])
    dist = {"x": FloatDistribution(0, 1)}
    spans = [(0, 10), (5, 20), (100, 110), (110, 130), (130, 150), (20, 3600), (150, None)]
    states = ["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "COMPLETE", "FAIL", "RUNNING"]
    values = [0.5, 0.7, None, None, 0.6, None, None]
    for (start, end), state, value in zip(spans, states, values, strict=True):
        t = create_trial(
            state=TrialState[state],
            value=value,
            params={"x": 0.5},
            distributions=dist,
            intermediate_values={1: 0.1, 2: 0.2} if state == "PRUNED" else None,
        )
        t.datetime_start = t0 + datetime.timedelta(seconds=start)
        t.datetime_complete = None if end is None else t0 + datetime.timedelta(seconds=end)
        study.add_trial(t)
    study.set_user_attr("dermsweep.void.5", "stale")
    return study


def test_time_to_quality_counts_sweep_time():
    from dermsweep.sweep.study_report import study_stats, sweep_seconds, time_to_quality

    study = _study_with_history()
    assert sweep_seconds(study) == 20 + 50  # [0, 20] and [100, 150]: the gap, the stale and the running one left out
    rows = time_to_quality(study)
    assert [r["number"] for r in rows] == [0, 1, 2, 3, 4]
    assert [r["elapsed_s"] for r in rows] == [10, 20, 30, 50, 70]
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED", "FAIL", "COMPLETE"]
    assert [r["value"] for r in rows] == [0.5, 0.7, 0.2, None, 0.6]  # pruned: its last reported value
    assert rows[2]["pruned_at_step"] == 2
    assert [r["best_so_far"] for r in rows] == [0.5, 0.7, 0.7, 0.7, 0.7]
    assert study_stats(study)["elapsed_minutes"] == round(70 / 60, 3)


def test_time_to_quality_table_and_figure(tmp_path):
    from dermsweep.sweep.study_report import draw_time_to_quality, time_to_quality, write_time_to_quality_table

    study = _study_with_history()
    rows = time_to_quality(study)
    write_time_to_quality_table(rows, tmp_path / "t.csv")
    table = list(csv.DictReader((tmp_path / "t.csv").read_text().splitlines()))
    assert [r["elapsed_minutes"] for r in table] == [str(round(s / 60, 4)) for s in (10, 20, 30, 50, 70)]
    assert table[2]["state"] == "PRUNED" and table[2]["pruned_at_step"] == "2"
    fig = draw_time_to_quality(rows, study)
    ax = fig.axes[0]
    assert "val_score" in ax.get_ylabel() and "minutes" in ax.get_xlabel()
    labels = ax.get_legend_handles_labels()[1]
    assert labels == ["best so far", "complete trial", "pruned trial (last reported value)", "failed trial"]
    fig.savefig(tmp_path / "t.png")
    assert (tmp_path / "t.png").stat().st_size > 10_000


# ----------------------------------------------------------------------------------------------- pruning
def test_auto_pruner_settings_are_pinned_once():
    import optuna

    from hydra_plugins.dermsweep_optuna_sweeper._study import resolve_auto, with_pinned

    hb = {"_target_": "optuna.pruners.HyperbandPruner", "min_resource": 1, "reduction_factor": 2}
    sha = {"_target_": "optuna.pruners.SuccessiveHalvingPruner", "reduction_factor": 3}
    study = optuna.create_study(direction="maximize")
    assert resolve_auto(hb, study) is None  # nothing COMPLETE yet
    for last in (6, 20):
        trial = study.ask()
        for step in range(1, last + 1):
            trial.report(0.5, step)
        study.tell(trial, 0.5)
    assert resolve_auto(hb, study) == 21  # as Optuna's "auto": the largest last step + 1
    assert resolve_auto(sha, study) == 1  # max(20 // 100, 1)
    assert resolve_auto({**hb, "max_resource": 20}, study) is None  # explicit: nothing to pin
    assert resolve_auto({"_target_": "optuna.pruners.MedianPruner"}, study) is None

    assert with_pinned(hb, {**hb, "max_resource": 21}) == {**hb, "max_resource": 21}
    assert with_pinned({**hb, "max_resource": "auto"}, {**hb, "max_resource": 21})["max_resource"] == 21
    assert with_pinned(hb, {**hb, "reduction_factor": 3, "max_resource": 21}) is hb  # another pruner setting
    assert with_pinned(sha, {**sha, "min_resource": 2}) == {**sha, "min_resource": 2}
    assert with_pinned(hb, None) is hb


def _hyperband_study_name(*groups: list[int], max_resource: int) -> str:
    """A study name whose trials fall into Hyperband brackets as asked: each group's trial numbers into one
    bracket, different groups into different brackets (Optuna assigns brackets by a hash of the study name and
    trial number), so the test knows which trials compete."""
    import optuna

    pruner = optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max_resource, reduction_factor=2)
    pruner._try_initialization(None)
    for i in range(20000):
        name = f"hb{i}"
        study = SimpleNamespace(study_name=name)
        ids = [{pruner._get_bracket_id(study, SimpleNamespace(number=n)) for n in group} for group in groups]
        if all(len(b) == 1 for b in ids) and len(set().union(*ids)) == len(groups):
            return name
    raise AssertionError("no study name found")


def test_hyperband_over_epochs_pins_auto_and_resumes(ws):
    """HyperbandPruner (max_resource "auto") over epochs 1..4: trial 0 completes and pins max_resource = 5 in the
    study's pruner spec; trial 1 (good) sets the bar in its bracket, trial 2 (worse, same bracket) is pruned. A
    resumed sweep (a new process) reads the pinned spec and prunes trial 3 (a hopeless value) too. The parent run
    plots time to quality with the pruned trials marked."""
    name = _hyperband_study_name([1, 2, 3], max_resource=5)
    args = [*HYPERBAND, *EPOCHS, warm(MID, GOOD, BAD)]
    run_app(ws, optuna_args(ws, 3, *args, study=name, plots=True, sweep_dir="ms1"))
    study = load_study(ws, name)
    assert {n: t.state.name for n, t in by_number(study).items()} == {0: "COMPLETE", 1: "COMPLETE", 2: "PRUNED"}
    assert spec_of(study)["max_resource"] == 5
    assert by_number(study)[2].last_step == 1  # pruned at the bracket's first rung (step 1 = epoch 1)

    client, parent = parent_of(ws)
    history = client.get_metric_history(parent.info.run_id, rf.BEST_VALUE_BY_SECOND)
    assert len(history) == 3 and history[-1].value == pytest.approx(study.best_value)
    assert [h.step for h in history] == sorted(h.step for h in history)
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, rf.STUDY_DIR)}
    assert {rf.TIME_TO_QUALITY_FIGURE, rf.TIME_TO_QUALITY_TABLE} <= arts
    table = Path(client.download_artifacts(parent.info.run_id, rf.TIME_TO_QUALITY_TABLE, str(ws))).read_text()
    rows = list(csv.DictReader(table.splitlines()))
    assert [r["state"] for r in rows] == ["COMPLETE", "COMPLETE", "PRUNED"] and rows[2]["pruned_at_step"] == "1"
    assert parent.data.tags[rf.STOP_REASON].startswith("n_trials reached: 3 of 3")

    proc = run_app(ws, optuna_args(ws, 4, *args, "prune_trials=[3]", study=name, sweep_dir="ms2"))
    assert "max_resource=5, pinned by an earlier sweep" in proc.stdout
    study = load_study(ws, name)
    assert by_number(study)[3].state.name == "PRUNED" and spec_of(study)["max_resource"] == 5


def test_successive_halving_min_resource_auto_is_pinned(ws):
    args = [
        "hydra.sweeper.pruner._target_=optuna.pruners.SuccessiveHalvingPruner",
        "+hydra.sweeper.pruner.reduction_factor=2",
        *EPOCHS,
        warm(MID, GOOD, BAD),
    ]
    run_app(ws, optuna_args(ws, 3, *args))
    study = load_study(ws)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert spec_of(study)["min_resource"] == 1


@pytest.mark.slow
def test_hyperband_with_parallel_workers(ws):
    """hydra/launcher=joblib, 2 trials at a time: jobs in worker processes build the pruner from the study's spec.
    Batch 1 (middling) completes and pins max_resource; batch 2 (good, one trial in each of two brackets, so the two
    running at once never compete) sets the bar; batch 3 (worse, one in each of those brackets) is pruned in the
    workers."""
    name = _hyperband_study_name([2, 4], [3, 5], max_resource=5)
    run_app(
        ws,
        optuna_args(
            ws,
            6,
            *HYPERBAND,
            *EPOCHS,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hydra.sweeper.n_jobs=2",
            warm(MID, {"x": 0.6, "y": 0.9}, GOOD, {"x": 0.32, "y": 0.6}, BAD, {"x": 0.9, "y": 0.9}),
            study=name,
        ),
    )
    study = load_study(ws, name)
    states = {n: t.state.name for n, t in by_number(study).items()}
    assert states == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE", 3: "COMPLETE", 4: "PRUNED", 5: "PRUNED"}
    assert spec_of(study)["max_resource"] == 5
