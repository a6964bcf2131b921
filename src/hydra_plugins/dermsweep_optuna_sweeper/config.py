"""Structured config of the sweeper, stored as ``hydra/sweeper: optuna`` in Hydra's ConfigStore, and the sampler
config group ``hydra/sweeper/sampler`` (the options hydra-optuna-sweeper users select, plus dermsweep's default).

The group's options keep hydra-optuna-sweeper's keys and default values (where Optuna 5 still has them), so configs
written for it compose unchanged; docs/sweeps.md, "Coming from hydra-optuna-sweeper", lists what differs.
"""

import importlib.util
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore

# What users of `hydra/sweeper: optuna` get when they select no sampler: multivariate TPE with the constant liar
# (parallel trials avoid each other's points), as dermsweep's sweeps always had. Upstream's `tpe` option is
# univariate, so it is a separate option here rather than dermsweep's default.
DEFAULT_SAMPLER = "dermsweep_tpe"
# The pruner when a sweep names none. A sweep file that names another class inherits these keys through Hydra's
# merge; the sweeper drops them quietly where that class does not take them (they are ours, not the user's).
DEFAULT_PRUNER: dict[str, Any] = {"_target_": "optuna.pruners.MedianPruner", "n_startup_trials": 5, "n_warmup_steps": 1}

# The options of hydra/sweeper/sampler. Plain dicts (not dataclasses): a config may also set any other keyword the
# Optuna class takes (e.g. `constant_liar`, `popsize`), which upstream's typed options refused.
SAMPLERS: dict[str, dict[str, Any]] = {
    DEFAULT_SAMPLER: {
        "_target_": "optuna.samplers.TPESampler",
        "seed": None,
        "multivariate": True,
        "constant_liar": True,
    },
    # upstream's keys and values; None = Optuna's own default (upstream's deprecated TPE knobs, whose Optuna 5
    # fall-back values equal upstream's old defaults: passing them would only add FutureWarnings)
    "tpe": {
        "_target_": "optuna.samplers.TPESampler",
        "seed": None,
        "consider_prior": None,
        "prior_weight": None,
        "consider_magic_clip": None,
        "consider_endpoints": None,
        "n_startup_trials": 10,
        "n_ei_candidates": 24,
        "multivariate": False,
        "warn_independent_sampling": None,
    },
    "random": {"_target_": "optuna.samplers.RandomSampler", "seed": None},
    "cmaes": {
        "_target_": "optuna.samplers.CmaEsSampler",
        "seed": None,
        "x0": None,
        "sigma0": None,
        "independent_sampler": None,
        "warn_independent_sampling": True,
        "consider_pruned_trials": False,
        # upstream: restart_strategy null, inc_popsize 2; Optuna >= 4.4 no longer restarts CMA-ES (null = as before,
        # a value is refused with an explanation; inc_popsize only ever applied to restarts)
        "restart_strategy": None,
        "inc_popsize": None,
        "use_separable_cma": False,
        "source_trials": None,
    },
    "nsgaii": {
        "_target_": "optuna.samplers.NSGAIISampler",
        "seed": None,
        "population_size": 50,
        "mutation_prob": None,
        "crossover_prob": 0.9,
        "swapping_prob": 0.5,
        "constraints_func": None,
    },
    # MOTPESampler was removed from Optuna (4.0): selecting it fails before the sweep starts, saying to use `tpe`.
    # Upstream 1.2's keys are kept so such configs still compose and reach that message.
    "motpe": {
        "_target_": "optuna.samplers.MOTPESampler",
        "seed": None,
        "consider_prior": None,
        "prior_weight": None,
        "consider_magic_clip": None,
        "consider_endpoints": None,
        "n_startup_trials": 10,
        "n_ehvi_candidates": 24,
    },
    # the search space is built by the sweeper from `params` (upstream's _partial_ marks exactly that)
    "grid": {"_target_": "optuna.samplers.GridSampler", "_partial_": True, "seed": None},
    "qmc": {
        "_target_": "optuna.samplers.QMCSampler",
        "seed": None,
        "qmc_type": "sobol",
        "scramble": False,
        "independent_sampler": None,
        "warn_asynchronous_seeding": True,
        "warn_independent_sampling": True,
    },
    "gp": {
        "_target_": "optuna.samplers.GPSampler",
        "seed": None,
        "independent_sampler": None,
        "n_startup_trials": 10,
        "deterministic_objective": False,
        "constraints_func": None,
        "warn_independent_sampling": True,
    },
}

DEFAULT_VALIDATE = "dermsweep.training.config.validate"
# Written in the alias package hydra_plugins.hydra_optuna_sweeper: tells it from the real upstream package.
ALIAS_MARKER = "dermsweep-alias-of-hydra-optuna-sweeper"


@dataclass
class DermsweepOptunaSweeperConf:
    _target_: str = "hydra_plugins.dermsweep_optuna_sweeper.optuna_sweeper.DermsweepOptunaSweeper"
    # _self_ first: the chosen hydra/sweeper/sampler option is merged over `sampler` below (which only names the
    # class), so `override hydra/sweeper/sampler: random` leaves no TPE keys behind.
    defaults: list[Any] = field(default_factory=lambda: ["_self_", {"sampler": DEFAULT_SAMPLER}])
    # sampler/pruner are instantiated by the sweeper itself (kwargs the _target_ does not accept are dropped with
    # a warning, so `hydra.sweeper.sampler._target_=optuna.samplers.RandomSampler` just works).
    _recursive_: bool = False

    # Filled from the config group hydra/sweeper/sampler (tpe, random, cmaes, nsgaii, grid, qmc, gp; default
    # dermsweep_tpe = TPESampler(multivariate=True, constant_liar=True)), or any optuna.samplers.* by _target_.
    sampler: Any = field(default_factory=lambda: {"_target_": "optuna.samplers.TPESampler"})
    # Any optuna.pruners.*; null = no pruning.
    pruner: Any = field(default_factory=lambda: dict(DEFAULT_PRUNER))
    # "maximize" | "minimize", or a list of them (multi-objective: the task returns a dict/tuple of floats).
    # null = the task config's objective.direction when it has one (dermsweep's train.py), else "minimize"
    # (hydra-optuna-sweeper's default, so its configs that rely on it are not silently inverted).
    direction: Any = None
    # Names of the objectives (keys of the dict the task returns); optional for a single objective.
    metrics: list[str] | None = None
    # null = "<experiment>-<sweep file name>" (e.g. dermsweep-smoke) or "<experiment or job name>-sweep".
    study_name: str | None = None
    # Any Optuna RDB URL, journal:///path/file.log (JournalFileBackend), or null (in memory, basic launcher only).
    storage: str | None = "sqlite:///mlruns/optuna.db"
    # Trials to finish in the study in total (COMPLETE + PRUNED + FAIL, across resumes and workers); null = no
    # trial budget (then timeout is required).
    n_trials: int | None = 20
    # Time budget of the study: seconds (Optuna's unit) or a duration string ("90m", "3h", "1h30m"); null = none.
    # Counted in sweep time: wall-clock time while at least one of the study's trials runs, summed across resumes
    # and shared by workers (gaps between invocations left out). Once spent, no new trial is launched; running
    # trials finish. The parent run's tag dermsweep.stop_reason says which budget ended the sweep.
    timeout: Any = None
    # Known configurations to run first (study.enqueue_trial), keys as in params: [{model: mobilenet_v2,
    # trainer.finetune.lr: 2e-4}, ...]; keys left out are sampled. Checked before the sweep starts; enqueued once
    # per study; they count towards n_trials.
    warm_start: Any = None
    # The best runs of an earlier MLflow experiment as warm start: an experiment name, or {experiment: NAME,
    # top_k: 3, metric: null (= objective.metric), direction: null (= the sweep's first), tracking_uri: null
    # (= tracking.uri), filter: null (an MLflow filter string)}. Their params are mapped onto params' keys (a config
    # group from its ".name" param); values outside the space are dropped with a logged line.
    warm_start_from: Any = None
    # Trials launched together per batch (use with hydra/launcher=joblib for real parallelism).
    n_jobs: int = 1
    # Stop the sweep (raising the first failure) when the share of FAILED trials in a batch of n_jobs exceeds this,
    # as hydra-optuna-sweeper does. 1.0 = never stop (dermsweep's default; upstream's is 0.0); pruned is no failure.
    max_failure_rate: float = 1.0
    # Search space: {override key: "choice(...)" | "range(...)" | "interval(...)" | "tag(log, interval(...))" | value}
    params: dict[str, Any] | None = None
    # Deprecated upstream form of the space: {key: {type: int|float|categorical, low, high, step, log, choices}}.
    # Ignored (with a warning) when params is set.
    search_space: dict[str, Any] | None = None
    # Optional "module.function(cfg, trial)" for define-by-run params (conditional spaces).
    custom_search_space: str | None = None
    # Heartbeat of RUNNING trials (RDB storages): a trial whose heartbeat is older than grace_period seconds is
    # failed and its parameters re-enqueued (at most max_retry times).
    heartbeat_interval: int = 30
    grace_period: int | None = 120
    max_retry: int | None = 2
    # Optuna plots (HTML + PNG) in the parent run's study/ folder at the end; false = trials.csv + summary only.
    plots: bool = True
    # Checked before the study, any trial or MLflow run exists: "module.function(cfg)" raising on a bad config,
    # called on the fixed overrides and on each bound/choice of the search space. null = no pre-flight.
    # The default applies to dermsweep's training config only (skipped for other apps' configs).
    validate: str | None = DEFAULT_VALIDATE


def _warn_if_upstream_installed() -> None:
    """facebookresearch's hydra-optuna-sweeper installed beside dermsweep shadows (or overwrites) the alias package
    hydra_plugins.hydra_optuna_sweeper and pins an Optuna older than 5: say so on every Hydra start-up."""
    try:
        spec = importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper")
    except (ImportError, ValueError):
        return
    if spec is None or not spec.origin:
        return
    try:
        ours = ALIAS_MARKER in Path(spec.origin).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return
    if not ours:
        warnings.warn(
            f"hydra-optuna-sweeper (facebookresearch) is installed at {Path(spec.origin).parent} beside dermsweep: "
            "it needs an Optuna older than 5 and replaces dermsweep's alias of its OptunaSweeper. dermsweep's "
            "sweeper already serves hydra/sweeper=optuna, its sampler group and its _target_: "
            "`pip uninstall hydra-optuna-sweeper` (then reinstall dermsweep if files were shared).",
            UserWarning,
            stacklevel=2,
        )


_cs = ConfigStore.instance()
_cs.store(group="hydra/sweeper", name="optuna", node=DermsweepOptunaSweeperConf, provider="dermsweep_optuna_sweeper")
for _name, _node in SAMPLERS.items():
    _cs.store(group="hydra/sweeper/sampler", name=_name, node=dict(_node), provider="dermsweep_optuna_sweeper")
_warn_if_upstream_installed()
