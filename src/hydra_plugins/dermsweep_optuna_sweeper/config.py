"""Structured config of the sweeper, stored as ``hydra/sweeper: optuna`` in Hydra's ConfigStore."""

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore


@dataclass
class DermsweepOptunaSweeperConf:
    _target_: str = "hydra_plugins.dermsweep_optuna_sweeper.optuna_sweeper.DermsweepOptunaSweeper"
    # sampler/pruner are instantiated by the sweeper itself (kwargs the _target_ does not accept are dropped with
    # a warning, so `hydra.sweeper.sampler._target_=optuna.samplers.RandomSampler` just works).
    _recursive_: bool = False

    # Any optuna.samplers.* (TPESampler, RandomSampler, CmaEsSampler, GPSampler, NSGAIISampler, ...).
    sampler: Any = field(
        default_factory=lambda: {
            "_target_": "optuna.samplers.TPESampler",
            "seed": None,
            "multivariate": True,
            "constant_liar": True,
        }
    )
    # Any optuna.pruners.*; null = no pruning.
    pruner: Any = field(
        default_factory=lambda: {
            "_target_": "optuna.pruners.MedianPruner",
            "n_startup_trials": 5,
            "n_warmup_steps": 1,
        }
    )
    # "maximize" | "minimize", or a list of them (multi-objective: the task returns a dict/tuple of floats).
    direction: Any = "maximize"
    # Names of the objectives (keys of the dict the task returns); optional for a single objective.
    metrics: Optional[List[str]] = None
    # null = "<experiment>-<sweep file name>" (e.g. dermsweep-smoke) or "<experiment>-sweep".
    study_name: Optional[str] = None
    # Any Optuna RDB URL, journal:///path/file.log (JournalFileBackend), or null (in memory, basic launcher only).
    storage: Optional[str] = "sqlite:///mlruns/optuna.db"
    # Trials to finish in the study in total (COMPLETE + PRUNED + FAIL, across resumes and workers).
    n_trials: int = 20
    # Trials launched together per batch (use with hydra/launcher=joblib for real parallelism).
    n_jobs: int = 1
    # Search space: {override key: "choice(...)" | "range(...)" | "interval(...)" | "tag(log, interval(...))" | value}
    params: Optional[Dict[str, Any]] = None
    # Optional "module.function(cfg, trial)" for define-by-run params (conditional spaces).
    custom_search_space: Optional[str] = None
    # Heartbeat of RUNNING trials (RDB storages): a trial whose heartbeat is older than grace_period seconds is
    # failed and its parameters re-enqueued (at most max_retry times).
    heartbeat_interval: int = 30
    grace_period: Optional[int] = 120
    max_retry: Optional[int] = 2
    # Optuna plots (HTML + PNG) in the parent run's study/ folder at the end; false = trials.csv + summary only.
    plots: bool = True
    # Checked before the study, any trial or MLflow run exists: "module.function(cfg)" raising on a bad config,
    # called on the fixed overrides and on each bound/choice of the search space. null = no pre-flight.
    validate: Optional[str] = "dermsweep.training.config.validate"


ConfigStore.instance().store(
    group="hydra/sweeper",
    name="optuna",
    node=DermsweepOptunaSweeperConf,
    provider="dermsweep_optuna_sweeper",
)
