"""hydra-optuna-sweeper users' configs on dermsweep's sweeper (issue 15): its grammar, its sampler config group and
keys, its examples and a lightning-hydra-template-style hparams_search file, run unchanged.

The apps in tests/upstream_examples/ are stand-ins written for these tests from the upstream examples' documented
behaviour (no TensorFlow); their configs hold the settings a user of the upstream plugin has. Each end-to-end test
runs an app in a subprocess with its working directory, MLflow store and Optuna storage inside tmp_path.
"""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.sweeper import APP, app_env

EXAMPLES = Path(__file__).parent / "upstream_examples"
ALIAS = "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper"
TIMEOUT = 240
# dermsweep's key, added where a test runs an example with extra overrides anyway: the parent run's Optuna plots
# take seconds to draw and are tested in test_sweeper.py.
NO_PLOTS = "hydra.sweeper.plots=false"


# ----------------------------------------------------------------------------------------------- helpers
def run(ws: Path, script: Path, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run an app as its users do (python script.py ...), from ws (the `ws` fixture), with Hydra's outputs in
    ws/ms."""
    full_env = {**app_env(), "MLFLOW_TRACKING_URI": f"sqlite:///{ws / 'mlflow.db'}", **(env or {})}
    proc = subprocess.run(
        [sys.executable, str(script), *args, f"hydra.sweep.dir={ws / 'ms'}"],
        cwd=ws,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"{script.name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def log_of(proc: subprocess.CompletedProcess) -> str:
    """Hydra's log and the error output together (Hydra logs to stdout, tracebacks go to stderr)."""
    return proc.stdout + proc.stderr


def results(ws: Path):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(ws / "ms" / "optimization_results.yaml"))


def study_of(ws: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{ws / 'optuna.db'}")


def storage(ws: Path, name: str) -> list[str]:
    """Upstream's own tests persist the study this way to look at it afterwards."""
    return [f"hydra.sweeper.storage=sqlite:///{ws / 'optuna.db'}", f"hydra.sweeper.study_name={name}"]


def dominates(a: list[float], b: list[float]) -> bool:
    return all(x <= y for x, y in zip(a, b, strict=False)) and any(x < y for x, y in zip(a, b, strict=False))


# ----------------------------------------------------------------------------------------------- grammar
@pytest.mark.parametrize(
    "line, expected",
    [
        ("key=choice(1,2)", ("cat", [1, 2])),
        ("key=choice(true, false)", ("cat", [True, False])),
        ("key=choice('hello', 'world')", ("cat", ["hello", "world"])),
        ("key=shuffle(range(1,3))", ("cat", [1, 2])),
        ("key=range(1,3)", ("int", dict(low=1, high=3))),
        ("key=interval(1, 5)", ("float", dict(low=1, high=5))),
        ("key=int(interval(1, 5))", ("int", dict(low=1, high=5))),
        ("key=tag(log, interval(1, 5))", ("float", dict(low=1, high=5, log=True))),
        ("key=tag(log, int(interval(1, 5)))", ("int", dict(low=1, high=5, log=True))),
        ("key=range(0.5, 5.5, step=1)", ("float", dict(low=0.5, high=5.5, step=1))),
    ],
)
def test_upstream_grammar_cases(line, expected):
    """The ten grammar cases of hydra-optuna-sweeper's test file give the same Optuna 5 distributions."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.dermsweep_optuna_sweeper._search_space import create_distribution_from_override

    got = create_distribution_from_override(OverridesParser.create().parse_override(line))
    kind, value = expected
    if kind == "cat":
        assert isinstance(got, CategoricalDistribution) and set(got.choices) == set(value)  # shuffle: any order
    else:
        assert got == (IntDistribution if kind == "int" else FloatDistribution)(**value)


def test_fixed_and_delete_overrides_pass_through():
    from optuna.distributions import CategoricalDistribution, IntDistribution

    from hydra_plugins.dermsweep_optuna_sweeper._search_space import override_line, parse_search_space

    space, fixed = parse_search_space(None, ["key1=choice(1,2)", "key2=5", "key3=range(1,3)", "~z", "~w=10"])
    assert space == {"key1": CategoricalDistribution([1, 2]), "key3": IntDistribution(1, 3)}
    assert [override_line(k, v) for k, v in fixed.items()] == ["key2=5", "~z", "~w=10"]


def test_deprecated_search_space_form():
    """hydra.sweeper.search_space (upstream 1.1): used when params is unset, command line on top; ignored (with a
    warning) when params is set."""

    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.dermsweep_optuna_sweeper._search_space import search_space

    old = {
        "a": {"type": "int", "low": 1, "high": 9, "step": 2},
        "b": {"type": "float", "low": 1e-3, "high": 1, "log": True},
        "c": {"type": "categorical", "choices": ["x", "y"]},
        "d": {"type": "float", "low": 0, "high": 1, "step": 0.25},
        "e": {"type": "int", "low": 1, "high": 64, "log": True},
    }

    with pytest.warns(UserWarning, match="deprecated"):
        space, fixed = search_space(None, False, old, ["c=x", "f=choice(1, 2)"], None)
    assert space == {
        "a": IntDistribution(1, 9, step=2),
        "b": FloatDistribution(1e-3, 1, log=True),
        "d": FloatDistribution(0, 1, step=0.25),
        "e": IntDistribution(1, 64, log=True),
        "f": CategoricalDistribution([1, 2]),
    }
    assert fixed == {"c": "x"}
    with pytest.warns(UserWarning, match="params defines"):
        space, _ = search_space({"g": "interval(0, 1)"}, True, old, [], None)
    assert list(space) == ["g"]


def test_direction_left_unset():
    """null = the task config's objective.direction (dermsweep's train.py), else upstream's default: minimize."""
    from omegaconf import OmegaConf

    from hydra_plugins.dermsweep_optuna_sweeper._options import default_directions
    from hydra_plugins.dermsweep_optuna_sweeper._options import directions as _directions

    assert default_directions(OmegaConf.create({"objective": {"direction": "maximize"}}))[0] == ["maximize"]
    assert default_directions(OmegaConf.create({"x": 1}))[0] == ["minimize"]
    assert _directions(["MINIMIZE", "maximize"]) == ["minimize", "maximize"]


# ----------------------------------------------------------------------------------------------- sampler group
# hydra-optuna-sweeper's option -> (Optuna class, its keys' default values there), written from its config.py
UPSTREAM_SAMPLERS = {
    "tpe": ("TPESampler", dict(seed=None, n_startup_trials=10, n_ei_candidates=24, multivariate=False)),
    "random": ("RandomSampler", dict(seed=None)),
    "cmaes": (
        "CmaEsSampler",
        dict(
            seed=None,
            x0=None,
            sigma0=None,
            independent_sampler=None,
            warn_independent_sampling=True,
            consider_pruned_trials=False,
            restart_strategy=None,
            use_separable_cma=False,
            source_trials=None,
        ),
    ),
    "nsgaii": (
        "NSGAIISampler",
        dict(
            seed=None,
            population_size=50,
            mutation_prob=None,
            crossover_prob=0.9,
            swapping_prob=0.5,
            constraints_func=None,
        ),
    ),
    "motpe": ("MOTPESampler", dict(seed=None, n_startup_trials=10, n_ehvi_candidates=24)),
    "grid": ("GridSampler", dict(_partial_=True)),
    "qmc": (
        "QMCSampler",
        dict(
            seed=None,
            qmc_type="sobol",
            scramble=False,
            independent_sampler=None,
            warn_asynchronous_seeding=True,
            warn_independent_sampling=True,
        ),
    ),
    "gp": (
        "GPSampler",
        dict(
            seed=None,
            independent_sampler=None,
            n_startup_trials=10,
            deterministic_objective=False,
            constraints_func=None,
            warn_independent_sampling=True,
        ),
    ),
}


def test_sampler_group_has_upstream_options_and_defaults():
    from hydra.core.config_store import ConfigStore

    import hydra_plugins.dermsweep_optuna_sweeper.config  # noqa: F401  (registers the group)

    cs = ConfigStore.instance()
    assert set(cs.list("hydra/sweeper/sampler")) == {f"{n}.yaml" for n in [*UPSTREAM_SAMPLERS, "dermsweep_tpe"]}
    for name, (cls, defaults) in UPSTREAM_SAMPLERS.items():
        node = cs.load(f"hydra/sweeper/sampler/{name}.yaml").node
        assert node["_target_"] == f"optuna.samplers.{cls}", name
        for key, value in defaults.items():
            assert node[key] == value, (name, key, node[key], value)
    default = cs.load("hydra/sweeper/sampler/dermsweep_tpe.yaml").node
    assert (default.multivariate, default.constant_liar) == (True, True)


@pytest.mark.parametrize("name", [n for n in UPSTREAM_SAMPLERS if n != "motpe"] + ["dermsweep_tpe"])
def test_each_sampler_option_builds_on_optuna_5(name):
    """Every key of every option is one Optuna 5's class takes (none dropped); a sampler whose optional package is
    missing here (cmaes, torch) is refused up front, naming the package."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    from hydra_plugins.dermsweep_optuna_sweeper import _samplers
    from hydra_plugins.dermsweep_optuna_sweeper._links import trial_link
    from hydra_plugins.dermsweep_optuna_sweeper.config import SAMPLERS

    spec = SAMPLERS[name]
    space = {"a": CategoricalDistribution(["x", "y"]), "b": IntDistribution(0, 3)}
    missing = [m for m in _samplers.NEEDS.get(spec["_target_"], ()) if importlib.util.find_spec(m) is None]
    if missing:
        with pytest.raises(ImportError, match=f"pip install {' '.join(missing)}"):
            _samplers.prepare(spec, space)
        return
    clean, extra, grid_size = _samplers.prepare(spec, space)
    sampler, dropped = trial_link.instantiate_filtered(clean, **extra)
    assert dropped == []
    assert type(sampler).__name__ == spec["_target_"].rsplit(".", 1)[1]
    if name == "grid":  # upstream's grid rule: a range's upper bound is left out
        assert grid_size == 2 * 3 and extra["search_space"] == {"a": ["x", "y"], "b": [0, 1, 2]}


def test_removed_or_retired_samplers_fail_with_the_fix():
    from hydra_plugins.dermsweep_optuna_sweeper import _samplers
    from hydra_plugins.dermsweep_optuna_sweeper.config import SAMPLERS

    with pytest.raises(ValueError, match=r"MOTPESampler.*override hydra/sweeper/sampler: tpe"):
        _samplers.prepare(SAMPLERS["motpe"], {})
    cma = {**SAMPLERS["cmaes"], "restart_strategy": "ipop", "inc_popsize": 2}
    if importlib.util.find_spec("cmaes") is not None:
        with pytest.raises(ValueError, match="restart_strategy='ipop'.*OptunaHub"):
            _samplers.prepare(cma, {})
    with pytest.raises(ValueError, match="only supports discrete"):
        from optuna.distributions import FloatDistribution

        _samplers.prepare(SAMPLERS["grid"], {"x": FloatDistribution(0, 1)})


def test_nested_target_in_sampler_config_is_instantiated():
    """upstream instantiated the sampler recursively: independent_sampler: {_target_: ...} gives the object."""
    import optuna

    from hydra_plugins.dermsweep_optuna_sweeper import _samplers
    from hydra_plugins.dermsweep_optuna_sweeper.config import SAMPLERS

    spec = {**SAMPLERS["qmc"], "independent_sampler": {"_target_": "optuna.samplers.RandomSampler", "seed": 3}}
    _, extra, _ = _samplers.prepare(spec, {})
    assert isinstance(extra["independent_sampler"], optuna.samplers.RandomSampler)


def test_configs_compose_with_sampler_group_and_upstream_target():
    """The sphere config picks upstream's tpe option (upstream's values); a config selecting no sampler (the
    lightning-style file) gets dermsweep's multivariate TPE with its own keys merged over it."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(EXAMPLES / "conf"), version_base=None):
        sweeper = compose("config", return_hydra_config=True).hydra.sweeper
    assert sweeper.sampler == {
        "_target_": "optuna.samplers.TPESampler",
        "seed": 123,
        "consider_prior": None,
        "prior_weight": None,
        "consider_magic_clip": None,
        "consider_endpoints": None,
        "n_startup_trials": 10,
        "n_ei_candidates": 24,
        "multivariate": False,
        "warn_independent_sampling": None,
    }
    assert sweeper.max_failure_rate == 0.0 and sweeper._target_.endswith("DermsweepOptunaSweeper")
    with initialize_config_dir(str(EXAMPLES / "lightning_style" / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=["hparams_search=toy_optuna"], return_hydra_config=True)
    assert cfg.hydra.sweeper._target_ == ALIAS
    assert cfg.hydra.sweeper.sampler == {
        "_target_": "optuna.samplers.TPESampler",
        "seed": 1234,
        "multivariate": True,
        "constant_liar": True,
        "n_startup_trials": 10,
    }


# ----------------------------------------------------------------------------------------------- alias
def test_alias_is_a_registered_sweeper_and_adds_no_config():
    from hydra.core.config_store import ConfigStore
    from hydra.core.plugins import Plugins
    from hydra.plugins.sweeper import Sweeper

    from hydra_plugins.dermsweep_optuna_sweeper.optuna_sweeper import DermsweepOptunaSweeper

    by_name = {f"{c.__module__}.{c.__name__}": c for c in Plugins.instance().discover(Sweeper)}
    assert issubclass(by_name[ALIAS], DermsweepOptunaSweeper)
    assert importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper.config") is None
    node = ConfigStore.instance().load("hydra/sweeper/optuna.yaml")
    assert node.provider == "dermsweep_optuna_sweeper" and node.node._target_.endswith("DermsweepOptunaSweeper")


def test_real_upstream_package_on_the_path_is_reported(tmp_path):
    """Should facebookresearch's package be installed too (it pins an older Optuna), Hydra start-up says so."""
    fake = tmp_path / "hydra_plugins" / "hydra_optuna_sweeper"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('__version__ = "1.2.0"  # stands for the upstream package\n')
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    code = "from hydra.core.plugins import Plugins; Plugins.instance()"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    assert "pip uninstall hydra-optuna-sweeper" in log_of(proc)
    clean = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=TIMEOUT)
    assert "hydra-optuna-sweeper (facebookresearch)" not in clean.stderr


# ----------------------------------------------------------------------------------------------- failures
def test_max_failure_rate_is_checked_per_batch():
    from hydra.core.utils import JobReturn, JobStatus
    from optuna.trial import TrialState

    from hydra_plugins.dermsweep_optuna_sweeper._impl import OptunaSweeperImpl
    from hydra_plugins.dermsweep_optuna_sweeper._outcome import check_failure_rate

    def impl(rate):
        return OptunaSweeperImpl(
            sampler=None,
            pruner=None,
            direction="minimize",
            study_name=None,
            storage=None,
            n_trials=2,
            n_jobs=2,
            max_failure_rate=rate,
        )

    def check(rate, results):
        check_failure_rate(results, impl(rate).max_failure_rate)

    def ret(exc=None):
        r = JobReturn()
        r.status, r._return_value = (JobStatus.FAILED, exc) if exc else (JobStatus.COMPLETED, 1.0)
        return r

    half = [(ret(RuntimeError("boom")), TrialState.FAIL, "RuntimeError: boom"), (ret(), TrialState.COMPLETE, "")]
    check(0.5, half)  # 1/2 does not exceed 0.5
    with pytest.raises(RuntimeError, match="boom"):  # the job's own exception
        check(0.49, half)
    pruned = [(ret(), TrialState.PRUNED, ""), (ret(), TrialState.COMPLETE, "")]
    check(0.0, pruned)  # pruning is no failure
    bad_value = [(ret(), TrialState.FAIL, "ValueError: the task returned a non-finite objective: [nan]")]
    with pytest.raises(ValueError, match="non-finite"):
        check(0.0, bad_value)
    with pytest.raises(ValueError, match="between 0 and 1"):
        impl(1.5)


@pytest.mark.parametrize("rate", [0.5, 1.0])
def test_sphere_failure_rate(ws, rate):
    """As upstream's own test: every job fails, batches of 2. 0.5 is exceeded by the first batch (the sweep stops
    with the job's error); 1.0 never is (the sweep runs all trials, each FAIL)."""
    proc = run(
        ws,
        EXAMPLES / "sphere.py",
        "--multirun",
        "hydra.sweeper.n_trials=4",
        "hydra.sweeper.n_jobs=2",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=123",
        NO_PLOTS,
        f"hydra.sweeper.max_failure_rate={rate}",
        "error=true",
        *storage(ws, "fail"),
        check=False,
    )
    trials = study_of(ws, "fail").trials
    assert all(t.state.name == "FAIL" for t in trials)
    if rate < 1.0:
        assert proc.returncode != 0 and "RuntimeError: cfg.error is True" in log_of(proc)
        assert len(trials) == 2
    else:
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert len(trials) == 4


# ----------------------------------------------------------------------------------------------- examples
def test_sphere_example_unchanged(ws):
    """python sphere.py --multirun, nothing added: 20 trials of upstream's TPE, as good as upstream's threshold
    (best value <= 2.27, the 95th percentile over 1000 seeds in its test)."""
    proc = run(ws, EXAMPLES / "sphere.py", "--multirun")
    out = results(ws)
    assert out["name"] == "optuna" and out["study_name"] == "sphere"
    assert out["best_value"] <= 2.27
    assert out["best_value"] == pytest.approx(out["best_params"]["x"] ** 2 + out["best_params"]["y"] ** 2)
    assert log_of(proc).count("trial ") >= 20 and "trial 19 COMPLETE" in log_of(proc)
    assert "sampler TPESampler, n_trials=20" in log_of(proc)
    assert list((ws / "mlartifacts").glob("*/artifacts/study/summary.json"))  # the MLflow parent run's summary
    print(f"sphere: best {out['best_params']} value {out['best_value']}")


def test_sphere_example_with_upstream_test_overrides(ws):
    """The overrides upstream's test passes: a persistent study, the sampler group and seed on the command line,
    a delete override (~z), a command-line search space and a fixed parameter."""
    run(
        ws,
        EXAMPLES / "sphere.py",
        "--multirun",
        "hydra.job.chdir=True",
        "hydra.sweeper.n_trials=20",
        "hydra.sweeper.n_jobs=1",
        *storage(ws, "sphere-cli"),
        "hydra/sweeper/sampler=tpe",
        "hydra.sweeper.sampler.seed=123",
        "~z",
        "x=choice(0, 1, 2)",
        "y=0",
        NO_PLOTS,
    )
    out, study = results(ws), study_of(ws, "sphere-cli")
    assert len(study.trials) == 20 and all(t.state.name == "COMPLETE" for t in study.trials)
    assert out["best_params"] == study.best_trial.params and "y" not in out["best_params"]
    assert out["best_value"] == study.best_value == 0
    assert study.best_trial.user_attrs["y"] == "0"  # fixed parameters are kept as user attrs, as upstream


def test_grid_sampler_example(ws):
    """--config-name grid: upstream's grid rule (range upper bound left out) gives 2x2x2 points, n_trials 20 -> 8."""
    proc = run(
        ws,
        EXAMPLES / "sphere.py",
        "--multirun",
        f"--config-dir={EXAMPLES / 'extra-conf'}",
        "--config-name=grid",
        "hydra.job.chdir=False",
        *storage(ws, "grid"),
        NO_PLOTS,
    )
    study = study_of(ws, "grid")
    points = {(t.params["x"], t.params["y"], t.params["z"]) for t in study.trials}
    assert len(study.trials) == 8 and len(points) == 8
    assert {p[1] for p in points} == {-1.0, 0.0}
    assert results(ws)["best_value"] == 1 and "n_trials 20 -> 8" in log_of(proc)


def test_multi_objective_example_unchanged_and_with_random_sampler(ws):
    """NSGA-II from the config's sampler group; then upstream's variant: random sampler, integer ranges."""
    proc = run(ws, EXAMPLES / "multi-objective.py", "--multirun", *storage(ws, "mo"))
    assert "sampler NSGAIISampler" in log_of(proc)
    sols = results(ws)["solutions"]
    assert sols and all(s["params"]["x"] % 1 in (0, 0.5) and s["params"]["y"] % 1 in (0, 0.5) for s in sols)
    assert not any(dominates(a["values"], b["values"]) for a in sols for b in sols)
    study = study_of(ws, "mo")
    assert len(study.directions) == 2 and len(study.trials) == 20

    run(
        ws,
        EXAMPLES / "multi-objective.py",
        "--multirun",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=123",
        "x=range(0, 5)",
        "y=range(0, 3)",
        *storage(ws, "mo-random"),
        NO_PLOTS,
    )
    sols = results(ws)["solutions"]
    assert all(s["params"]["x"] % 1 == 0 and s["params"]["y"] % 1 == 0 for s in sols)
    assert not any(dominates(a["values"], b["values"]) for a in sols for b in sols)


def test_motpe_config_fails_before_anything_starts(ws):
    proc = run(
        ws,
        EXAMPLES / "multi-objective.py",
        "--multirun",
        f"--config-dir={EXAMPLES / 'extra-conf'}",
        "--config-name=motpe",
        *storage(ws, "motpe"),
        check=False,
    )
    assert proc.returncode != 0
    assert "Optuna removed MOTPESampler" in log_of(proc) and "override hydra/sweeper/sampler: tpe" in log_of(proc)
    assert not (ws / "optuna.db").exists()  # no study was created


def test_custom_search_space_example(ws):
    """The define-by-run hook named by a hyphenated file name; z stays within max_z_difference_from_x of x."""
    run(
        ws,
        EXAMPLES / "custom-search-space-objective.py",
        "--multirun",
        "max_z_difference_from_x=0.3",
        *storage(ws, "css"),
        NO_PLOTS,
    )
    study = study_of(ws, "css")
    assert len(study.trials) == 20
    for t in study.trials:
        assert abs(t.params["x"] - t.params["z"]) <= 0.3 + 1e-9 and 0 <= t.params["+w"] <= 1
    best = results(ws)["best_params"]
    assert abs(best["x"] - best["z"]) <= 0.3 + 1e-9


def test_lightning_style_hparams_search_unchanged(ws):
    """train.py hparams_search=toy_optuna: multirun from the file, upstream's class by _target_, sampler by
    _target_ with the template's keys."""
    proc = run(ws, EXAMPLES / "lightning_style" / "train.py", "hparams_search=toy_optuna")
    assert f"{ALIAS} is dermsweep's Optuna sweeper" in log_of(proc)
    assert "sampler TPESampler, n_trials=20" in log_of(proc) and "trial 19 COMPLETE" in log_of(proc)
    out = results(ws)
    assert set(out["best_params"]) == {
        "model.optimizer.lr",
        "data.batch_size",
        "model.net.lin1_size",
        "model.net.lin2_size",
        "model.net.lin3_size",
    }
    assert math.isfinite(out["best_value"]) and out["best_value"] > 0.9


def test_upstream_form_config_prunes(ws):
    """What upstream could not do: a config in upstream's form (its _target_, a sampler from the group) on an app
    that reports per-epoch values (tests/sweeper_app) gets its hopeless trial pruned."""
    db = ws / "optuna.db"
    run(
        ws,
        APP,
        "-m",
        "hydra/sweeper=optuna",
        f"hydra.sweeper._target_={ALIAS}",
        "hydra/sweeper/sampler=random",
        "hydra.sweeper.sampler.seed=7",
        f"hydra.sweeper.storage=sqlite:///{db}",
        "hydra.sweeper.study_name=s",
        "hydra.sweeper.n_trials=3",
        NO_PLOTS,
        "hydra.sweeper.direction=maximize",
        "hydra.sweeper.pruner._target_=optuna.pruners.ThresholdPruner",
        "+hydra.sweeper.pruner.lower=-10",
        "x=interval(0, 1)",
        "y=choice(0.2, 0.6, 0.9)",
        "prune_trials=[1]",
        f"hydra.run.dir={ws / 'run'}",
        f"tracking.uri=sqlite:///{ws / 'mlflow.db'}",
        f"tracking.artifact_root={ws / 'artifacts'}",
    )
    assert [t.state.name for t in study_of(ws, "s").trials] == ["COMPLETE", "PRUNED", "COMPLETE"]
