"""The Optuna sweeper plugin (hydra/sweeper=optuna), the trial link and MLflow parent runs.

Runs a stand-in Hydra app (tests/sweeper_app/my_app.py: fake per-epoch values, no TensorFlow; helpers.sweeper) in
subprocesses, with MLflow, the Optuna storage and Hydra's output folders inside tmp_path (the `ws` fixture).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from dermsweep.tracking import run_format as rf
from helpers.config import CONF
from helpers.sweeper import TIMEOUT, base_args, load_study, optuna_args, run_app, runs_of, spawn_app, states


# ----------------------------------------------------------------------------------------------- plugin
def test_plugin_is_discovered_and_registered():
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]
    assert "DermsweepOptunaSweeper" in names
    node = ConfigStore.instance().load("hydra/sweeper/optuna.yaml").node
    assert node._target_.endswith("DermsweepOptunaSweeper")
    assert node.sampler["_target_"] == "optuna.samplers.TPESampler"
    assert node.storage == "sqlite:///mlruns/optuna.db"


def test_sweeper_selectable_from_the_command_line(tmp_path):
    proc = run_app(tmp_path, ["hydra/sweeper=optuna", "--cfg", "hydra", "-p", "hydra.sweeper"])
    assert "DermsweepOptunaSweeper" in proc.stdout
    assert "constant_liar: true" in proc.stdout


def test_sweep_files_compose():
    from hydra import compose, initialize_config_dir

    names = sorted(p.stem for p in (CONF.parent / "sweeps").glob("*.yaml"))
    assert {"smoke", "backbone", "augmentation", "schedule_and_weighting", "full"} <= set(names)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in names:
            cfg = compose("config", overrides=[f"+sweep={name}"], return_hydra_config=True)
            assert cfg.hydra.sweeper._target_.endswith("DermsweepOptunaSweeper"), name
            assert cfg.hydra.sweeper.study_name.startswith("dermsweep-"), name
            assert cfg.hydra.sweeper.params, name


def test_every_sweep_files_search_space_parses_and_each_end_validates():
    """What the sweeper's pre-flight does at a sweep's start, for every file in sweeps/: each param line parses in
    the override grammar (Hydra's choice() takes no null, for one), each choice or range end composes and passes
    dermsweep's config validation, and so does each warm start (inside the space)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution

    from dermsweep.training import config
    from hydra_plugins.dermsweep_optuna_sweeper._search_space import create_distribution_from_override
    from hydra_plugins.dermsweep_optuna_sweeper._warm_start import check_entries

    parser = OverridesParser.create()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for name in sorted(p.stem for p in (CONF.parent / "sweeps").glob("*.yaml")):
            sweeper = compose("config", overrides=[f"+sweep={name}"], return_hydra_config=True).hydra.sweeper
            values, space = {}, {}
            for key, line in sweeper.params.items():
                space[key] = dist = create_distribution_from_override(parser.parse_override(f"{key}={line}"))
                values[key] = dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high)
            # Warm starts: inside the space (as the sweeper checks them at start), and each one a valid config.
            warm = OmegaConf.to_container(sweeper.warm_start) if sweeper.get("warm_start") else None
            for label, entry in check_entries(warm, space, {}, logging.getLogger(__name__)):
                overrides = [f"{key}={value}" for key, value in entry.items()]
                try:
                    config.validate(compose("config", overrides=[f"+sweep={name}", *overrides]))
                except Exception as exc:
                    raise AssertionError(f"sweeps/{name}.yaml {label} {' '.join(overrides)}: {exc}") from exc
            # Variant i takes each param's i-th value (its last once used up): every value checked, few composes.
            for i in range(max(len(v) for v in values.values())):
                overrides = [f"{key}={v[min(i, len(v) - 1)]}" for key, v in values.items()]
                try:
                    config.validate(compose("config", overrides=[f"+sweep={name}", *overrides]))
                except Exception as exc:
                    raise AssertionError(f"sweeps/{name}.yaml {' '.join(overrides)}: {exc}") from exc


# ----------------------------------------------------------------------------------------------- grammar
@pytest.mark.parametrize(
    "line, expected",
    [
        ("k=choice(a, b, 3)", ("CategoricalDistribution", {"choices": ("a", "b", 3)})),
        ("k=a,b", ("CategoricalDistribution", {"choices": ("a", "b")})),
        ("k=range(1, 10)", ("IntDistribution", {"low": 1, "high": 10, "step": 1, "log": False})),
        ("k=range(1, 9, 2)", ("IntDistribution", {"low": 1, "high": 9, "step": 2})),
        ("k=range(0, 1, step=0.25)", ("FloatDistribution", {"low": 0.0, "high": 1.0, "step": 0.25})),
        ("k=interval(0.1, 1)", ("FloatDistribution", {"low": 0.1, "high": 1.0, "log": False})),
        ("k=interval(1, 8)", ("FloatDistribution", {"low": 1.0, "high": 8.0})),  # like upstream
        ("k=tag(int, interval(1, 8))", ("IntDistribution", {"low": 1, "high": 8, "log": False})),
        ("k=tag(log, interval(1e-5, 1e-2))", ("FloatDistribution", {"low": 1e-5, "high": 1e-2, "log": True})),
        ("k=tag(log, int, interval(1, 1024))", ("IntDistribution", {"low": 1, "high": 1024, "log": True})),
        ("k=shuffle(range(1, 4))", ("CategoricalDistribution", None)),
    ],
)
def test_grammar(line, expected):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.dermsweep_optuna_sweeper._search_space import create_distribution_from_override

    dist = create_distribution_from_override(OverridesParser.create().parse_override(line))
    cls, attrs = expected
    assert type(dist).__name__ == cls
    for k, v in (attrs or {}).items():
        assert getattr(dist, k) == v, (k, getattr(dist, k))
    if line.startswith("k=shuffle"):
        assert sorted(dist.choices) == [1, 2, 3]


def test_search_space_params_fixed_and_command_line_precedence():
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    from hydra_plugins.dermsweep_optuna_sweeper._search_space import parse_search_space

    space, fixed = parse_search_space(
        {
            "model": "choice(mobilenet_v1, mobilenet_v2)",
            "model.alpha": "choice(0.5, 1.0)",
            "trainer.batch_size": 32,
            "trainer.finetune.lr": "tag(log, interval(1e-6, 1e-3))",
        },
        ["model.alpha=0.25", "+sweep=smoke", "model.dropout=interval(0, 0.5)"],
    )
    assert isinstance(space["model"], CategoricalDistribution)
    assert space["trainer.finetune.lr"].log
    assert isinstance(space["model.dropout"], FloatDistribution)
    assert "model.alpha" not in space  # the command line fixed it
    assert fixed == {"model.alpha": "0.25", "trainer.batch_size": "32", "+sweep": "smoke"}


def test_unsupported_sweep_is_rejected():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.dermsweep_optuna_sweeper._search_space import create_distribution_from_override

    with pytest.raises(NotImplementedError):
        create_distribution_from_override(OverridesParser.create().parse_override("k=glob(*)"))


# ----------------------------------------------------------------------------------------------- trial link
def test_trial_link_absent_outside_sweeps_and_env_is_not_sticky(monkeypatch):
    from dermsweep.sweep import trial_link

    for var in trial_link.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    assert trial_link.current() is None
    assert trial_link.parent_run_id() is None
    env = trial_link.job_env("st", "sqlite:///x.db", trial_id=12, number=3, parent_run_id="abc")
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    link = trial_link.current()
    assert link.number == 3 and link.trial_id == 12 and link.storage_url == "sqlite:///x.db"
    assert link.run_tags == {rf.STUDY_NAME: "st", rf.TRIAL_NUMBER: "3", rf.ROLE: "trial"}
    assert trial_link.parent_run_id() == "abc"
    monkeypatch.setenv(trial_link.ENV_TRIAL_NUMBER, "4")
    monkeypatch.setenv(trial_link.ENV_TRIAL_ID, "13")
    assert trial_link.current().number == 4  # never a stale cached link
    for k in env:
        monkeypatch.delenv(k)
    assert trial_link.current() is None and trial_link.parent_run_id() is None


@pytest.mark.parametrize(
    "directions,finished,mine,expected",
    [
        (["maximize"], [], [0.1], True),  # first trial: nothing to beat
        (["maximize"], [[0.5], [0.7]], [0.71], True),
        (["maximize"], [[0.5], [0.7]], [0.7], False),  # a tie keeps the earlier model
        (["minimize"], [[0.5], [0.3]], [0.29], True),
        (["minimize"], [[0.5], [0.3]], [0.4], False),
        (["maximize", "minimize"], [[0.8, 10.0]], [0.7, 5.0], True),  # a new point of the Pareto front
        (["maximize", "minimize"], [[0.8, 10.0]], [0.7, 12.0], False),  # dominated
    ],
)
def test_trial_improves_on_the_study_so_far(monkeypatch, directions, finished, mine, expected):
    """tracking.log_model=improving asks this: does the trial beat every finished trial (pruned ones do not count)?"""
    import optuna

    from dermsweep.sweep import trial_link

    study = optuna.create_study(directions=directions, study_name=f"improves-{len(finished)}-{mine}")
    for values in finished:
        study.tell(study.ask(), values if len(values) > 1 else values[0])
    pruned = study.ask()
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    trial_link.register_local_study(study)
    try:
        running = study.ask()
        for k, v in trial_link.job_env(study.study_name, None, running._trial_id, running.number, None).items():
            monkeypatch.setenv(k, v)
        assert trial_link.current().improves(mine) is expected
    finally:
        trial_link.unregister_local_study(study)


def test_the_last_epoch_is_reported_but_never_pruned(monkeypatch):
    """Pruning a trial after its last epoch saves nothing and throws its finished model away."""
    import optuna

    from dermsweep.sweep import trial_link

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    study = optuna.create_study(direction="maximize", study_name="last-epoch", pruner=AlwaysPrune())
    trial_link.register_local_study(study)
    try:
        running = study.ask()
        for k, v in trial_link.job_env(study.study_name, None, running._trial_id, running.number, None).items():
            monkeypatch.setenv(k, v)
        link = trial_link.current()
        with pytest.raises(optuna.TrialPruned):
            link.report(1, 0.5)
        link.report(2, 0.6, prunable=False)
        assert study.trials[0].intermediate_values == {1: 0.5, 2: 0.6}
    finally:
        trial_link.unregister_local_study(study)


def test_env_override_quoting_roundtrip():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from hydra_plugins.dermsweep_optuna_sweeper._search_space import env_overrides

    values = {"A": "sqlite:////tmp/a b/optuna.db", "B": "postgresql://u:p@h:5432/db?x=1", "C": "it's"}
    parser = OverridesParser.create()
    for line, (key, value) in zip(env_overrides(values), values.items(), strict=False):
        o = parser.parse_override(line)
        assert o.key_or_group == f"hydra.job.env_set.{key}" and o.value() == value


# ----------------------------------------------------------------------------------------------- sweeps
def test_sweep_prunes_fails_goes_on_and_logs_parent(ws):
    """5 trials: 1 raises, 2 diverges (NaN), 3 reports a hopeless value and is pruned; the rest complete."""
    run_app(
        ws,
        optuna_args(
            ws,
            5,
            "fail_trials=[1]",
            "nan_trials=[2]",
            "prune_trials=[3]",
            plots=True,
        )
        + ["hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner", "+hydra.sweeper.pruner.lower=-10"],
    )
    study = load_study(ws)
    by_num = {t.number: t for t in study.trials}
    assert [by_num[i].state.name for i in range(5)] == ["COMPLETE", "FAIL", "FAIL", "PRUNED", "COMPLETE"]
    assert by_num[1].user_attrs[rf.FAILURE_REASON].startswith("RuntimeError: boom")
    assert by_num[2].user_attrs[rf.FAILURE_REASON].startswith("TrainingDiverged")
    assert all("mlflow_run_id" in t.user_attrs for t in study.trials)

    client, runs = runs_of(ws)
    parents = [r for r in runs if r.data.tags.get(rf.ROLE) == "sweep"]
    assert len(parents) == 1
    assert not any(r.data.tags.get(rf.ROLE) == "multirun" for r in runs)  # the callback stood aside
    parent = parents[0]
    assert parent.info.run_name == "s" and parent.info.status == "FINISHED"
    assert parent.data.tags[rf.STUDY_NAME] == "s"
    children = {
        int(r.data.tags[rf.TRIAL_NUMBER]): r for r in runs if r.data.tags.get(rf.PARENT_RUN_ID) == parent.info.run_id
    }
    assert sorted(children) == [0, 1, 2, 3, 4]
    assert children[3].info.status == "KILLED" and children[3].data.tags[rf.STATUS] == "pruned"
    assert children[1].info.status == "FAILED" and children[1].data.tags[rf.STATUS] == "failed"
    assert children[0].data.params["x"] == str(by_num[0].params["x"])  # swept values are plain child params
    m = parent.data.metrics

    def sweep_metric(name):
        return m[rf.metric(rf.SWEEP_SECTION, name)]

    assert (sweep_metric("n_complete"), sweep_metric("n_pruned"), sweep_metric("n_failed")) == (2, 1, 2)
    assert sweep_metric("best_value") == pytest.approx(study.best_value)
    assert parent.data.tags[rf.BEST_RUN_ID] == study.best_trial.user_attrs["mlflow_run_id"]
    arts = {a.path: a.file_size for a in client.list_artifacts(parent.info.run_id, "study")}
    for name in (
        "trials.csv",
        "summary.json",
        "optimization_history.png",
        "param_importances.png",
        "parallel_coordinate.png",
    ):
        assert f"study/{name}" in arts, (name, arts)
    # small artifacts: no Plotly HTML carrying its own 4.8 MB plotly.js each
    assert not [p for p in arts if p.endswith(".html")] and max(arts.values()) < 1_000_000, arts
    assert parent.data.params["search.y"] == "choice(0.2, 0.6, 0.9)" and parent.data.params["sweeper.n_trials"] == "5"
    assert "ThresholdPruner" in parent.data.params["sweeper.pruner"]
    assert parent.data.tags[rf.DESCRIPTION].startswith("Optuna sweep of study s: maximize val_score")
    assert (ws / "ms" / "optimization_results.yaml").is_file()


def test_resume_counts_finished_trials_and_reuses_parent(ws):
    run_app(ws, optuna_args(ws, 2, sweep_dir="ms1"))
    first = {t.number: t.params for t in load_study(ws).trials}
    run_app(ws, optuna_args(ws, 4, sweep_dir="ms2"))
    study = load_study(ws)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]
    assert all(t.state.name == "COMPLETE" for t in study.trials)
    assert {n: study.trials[n].params for n in (0, 1)} == first  # never re-run
    _, runs = runs_of(ws)
    parents = [r for r in runs if r.data.tags.get(rf.ROLE) == "sweep"]
    assert len(parents) == 1
    kids = [r for r in runs if r.data.tags.get(rf.PARENT_RUN_ID) == parents[0].info.run_id]
    assert sorted(int(r.data.tags[rf.TRIAL_NUMBER]) for r in kids) == [0, 1, 2, 3]


def test_multi_objective_pareto_front(ws):
    run_app(
        ws,
        optuna_args(
            ws,
            4,
            "+objective.metrics=[val_score,gap]",
            "hydra.sweeper.direction=[maximize,minimize]",
            "hydra.sweeper.metrics=[val_score,gap]",
            "hydra.sweeper.sampler._target_=optuna.samplers.NSGAIISampler",
            "hydra.sweeper.pruner=null",
        ),
    )
    study = load_study(ws)
    assert len(study.directions) == 2 and study.metric_names == ["val_score", "gap"]
    assert states(study) == {"COMPLETE": 4}
    assert 1 <= len(study.best_trials) <= 4
    client, runs = runs_of(ws)
    parent = next(r for r in runs if r.data.tags.get(rf.ROLE) == "sweep")
    arts = {a.path for a in client.list_artifacts(parent.info.run_id, "study")}
    assert {"study/trials.csv", "study/summary.json"} <= arts
    import json

    summary = json.loads(Path(client.download_artifacts(parent.info.run_id, "study/summary.json", str(ws))).read_text())
    assert {t["number"] for t in summary["best_trials"]} == {t.number for t in study.best_trials}
    assert all(t["mlflow_run_id"] for t in summary["best_trials"])


def test_grid_multirun_with_basic_sweeper_gets_a_parent_run(ws):
    run_app(ws, ["-m", *base_args(ws), "x=0.1,0.2,0.3"])
    client, runs = runs_of(ws)
    parents = [r for r in runs if r.data.tags.get(rf.ROLE) == "multirun"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    kids = [r for r in runs if r.data.tags.get(rf.PARENT_RUN_ID) == parents[0].info.run_id]
    assert sorted(r.data.params["x"] for r in kids) == ["0.1", "0.2", "0.3"]
    assert parents[0].data.metrics[rf.metric(rf.SWEEP_SECTION, "n_runs")] == 3
    assert not any(r.data.tags.get(rf.ROLE) == "sweep" for r in runs)
    assert not (ws / "optuna.db").exists()


@pytest.mark.faults
def test_stale_running_trial_is_failed_and_its_params_retried(ws):
    """A trial left RUNNING by a dead worker (no heartbeat) is marked FAIL, not counted, and re-run."""
    import time
    import warnings

    import optuna

    from dermsweep.sweep import trial_link

    warnings.simplefilter("ignore")

    storage = trial_link.open_storage(f"sqlite:///{ws / 'optuna.db'}", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(dead._trial_id)
    x_dead = dead.params["x"]
    time.sleep(1.5)
    run_app(ws, optuna_args(ws, 2, "hydra.sweeper.heartbeat_interval=1", "hydra.sweeper.grace_period=1"))
    study = load_study(ws)
    assert study.trials[0].state.name == "FAIL"
    retried = [t for t in study.trials if t.system_attrs.get("failed_trial") == 0]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE" and retried[0].params["x"] == x_dead
    assert states(study) == {"FAIL": 1, "COMPLETE": 2}


@pytest.mark.slow
def test_joblib_launcher_parallel_batches_with_pruning(ws):
    run_app(
        ws,
        optuna_args(
            ws,
            2,
            "hydra/launcher=joblib",
            "hydra.launcher.n_jobs=2",
            "hydra.sweeper.n_jobs=2",
            "prune_trials=[1]",
            "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
            "+hydra.sweeper.pruner.lower=-10",
        ),
    )
    study = load_study(ws)
    assert {t.number: t.state.name for t in study.trials} == {0: "COMPLETE", 1: "PRUNED"}
    _, runs = runs_of(ws)
    pruned = [r for r in runs if r.data.tags.get(rf.TRIAL_NUMBER) == "1"]
    assert pruned[0].info.status == "KILLED" and pruned[0].data.tags[rf.STATUS] == "pruned"


@pytest.mark.slow
@pytest.mark.faults
def test_two_sweep_processes_share_one_storage(ws):
    n = 5
    procs = [
        spawn_app(ws, optuna_args(ws, n, "sleep=0.4", sweep_dir=f"w{i}") + ["hydra.sweeper.sampler.seed=null"])
        for i in range(2)
    ]
    outs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
    for p, out in zip(procs, outs, strict=False):
        assert p.returncode == 0, out[-4000:]
        assert "database is locked" not in out
    study = load_study(ws)
    void = {int(k.rsplit(".", 1)[1]) for k in study.user_attrs if k.startswith("dermsweep.void.")}
    done = [t for t in study.trials if t.number not in void]
    assert len(done) == n and all(t.state.name == "COMPLETE" for t in done)
    assert len({tuple(sorted(t.params.items())) for t in done}) == n  # no trial evaluated twice
    assert all("Launching trials" in out for out in outs)  # both workers took part
    _, runs = runs_of(ws)
    parents = [r for r in runs if r.data.tags.get(rf.ROLE) == "sweep"]
    assert len(parents) == 1


@pytest.mark.slow
@pytest.mark.faults
def test_interrupted_sweep_gives_its_trial_back_on_resume(ws):
    import signal
    import time

    proc = spawn_app(ws, optuna_args(ws, 3, "sleep=1.0", sweep_dir="ms1"))
    seen = []
    deadline = time.time() + TIMEOUT
    for line in proc.stdout:
        seen.append(line)
        if "Launching trials [1]" in line or time.time() > deadline:
            break
    time.sleep(1.5)  # trial 1 is running
    proc.send_signal(signal.SIGINT)
    out = "".join(seen) + proc.communicate(timeout=TIMEOUT)[0]
    assert proc.returncode != 0, out[-3000:]
    study = load_study(ws)
    assert study.user_attrs.get("dermsweep.void.1") == "interrupted", out[-3000:]
    x_cut = study.trials[1].params["x"]
    run_app(ws, optuna_args(ws, 3, sweep_dir="ms2"))
    study = load_study(ws)
    counted = [t for t in study.trials if f"dermsweep.void.{t.number}" not in study.user_attrs]
    assert len(counted) == 3 and all(t.state.name == "COMPLETE" for t in counted)
    assert any(t.params["x"] == x_cut for t in counted[1:])  # the interrupted point was run on resume


@pytest.mark.slow
@pytest.mark.faults
def test_a_worker_done_with_its_share_waits_for_the_others(ws):
    """Two workers on one study, one with slow trials: the fast one, once every trial is taken, waits for the slow
    one's running trial (so a trial of a worker that dies meanwhile is re-run, and the summary is complete)."""
    args = ["hydra.sweeper.sampler.seed=null", "epochs=2"]
    release = ws / "release"  # the slow worker's trial runs until the test creates it: no race with machine load
    slow = spawn_app(ws, optuna_args(ws, 2, f"hold_until={release}", *args, sweep_dir="slow"))
    seen = []
    for line in slow.stdout:  # the slow worker holds a trial before the fast one starts
        seen.append(line)
        if "Launching trials" in line:
            break
    fast = spawn_app(ws, optuna_args(ws, 2, *args, sweep_dir="fast"))
    fast_seen = []
    assert fast.stdout is not None
    for line in fast.stdout:  # until the fast worker waits for the slow one's trial (or ends without waiting)
        fast_seen.append(line)
        if "waiting for running trials" in line:
            break
    release.touch()
    outs = {name: p.communicate(timeout=TIMEOUT * 2)[0] for name, p in (("slow", slow), ("fast", fast))}
    outs["slow"] = "".join(seen) + outs["slow"]
    outs["fast"] = "".join(fast_seen) + outs["fast"]
    assert slow.returncode == 0 and fast.returncode == 0, outs
    assert "Launching trials" in outs["fast"] and "waiting for running trials" in outs["fast"], outs["fast"][-3000:]
    assert states(load_study(ws)) == {"COMPLETE": 2}
