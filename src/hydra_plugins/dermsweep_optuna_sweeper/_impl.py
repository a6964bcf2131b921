"""The dermsweep Optuna sweeper: an ask/tell loop over a Hydra launcher. Each job of the loop lives in its own
module: the grammar (_search_space), opening the study (_study), slots across workers (_slots), outcomes
(_outcome), the pre-flight (_preflight), warm starts (_warm_start), what the console shows (_console)."""

from __future__ import annotations

import importlib
import logging
import time
import warnings
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import optuna
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from optuna.distributions import BaseDistribution
from optuna.trial import TrialState

from . import _outcome, _parent, _samplers, _slots, _study, _warm_start
from ._console import hide_link_overrides
from ._links import optuna_private, optuna_storage, parent_run, trial_link, trial_owner, void
from ._options import (
    SweepSettingsError,
    default_directions,
    default_metric_names,
    directions,
    format_duration,
    parse_timeout,
    safe_url,
    to_container,
)
from ._preflight import preflight
from ._search_space import describe, env_overrides, override_line, search_space

log = logging.getLogger(__name__)


class OptunaSweeperImpl:
    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: Any,
        study_name: str | None,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        params: MutableMapping[str, Any] | None = None,
        custom_search_space: str | None = None,
        metrics: list[str] | None = None,
        heartbeat_interval: int = 30,
        grace_period: int | None = 120,
        max_retry: int | None = 2,
        plots: bool = True,
        validate: str | None = None,
        max_failure_rate: float = 1.0,
        search_space: MutableMapping[str, Any] | None = None,
        timeout: Any = None,
        warm_start: Any = None,
        warm_start_from: Any = None,
    ) -> None:
        self.plots = bool(plots)
        self.validate = validate
        self.sampler_spec = to_container(sampler)
        self.pruner_spec = to_container(pruner)
        # None: resolved in setup() from the task config (objective.direction), else upstream's "minimize"
        self.directions: list[str] = [] if direction is None else directions(to_container(direction))
        self.study_name = study_name
        # absolute: jobs that change directory, and a reaper started elsewhere, open the same file
        self.storage_url = optuna_storage.absolute_url(storage)
        self.n_trials: int | None = None if n_trials is None else int(n_trials)
        self.timeout = parse_timeout(to_container(timeout))
        if self.n_trials is None and self.timeout is None:
            raise SweepSettingsError("hydra.sweeper.n_trials=null needs a time budget (hydra.sweeper.timeout)")
        self.warm_start = to_container(warm_start)
        self.warm_start_from = _warm_start.from_spec(to_container(warm_start_from))
        self.stop_reason = ""
        self.n_jobs = max(1, int(n_jobs))
        self.max_failure_rate = float(max_failure_rate)
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise SweepSettingsError(f"hydra.sweeper.max_failure_rate={max_failure_rate}: must be between 0 and 1")
        self.params_given = params is not None
        self.params = to_container(params) or {}
        self.search_space = to_container(search_space)
        self.custom_search_space = custom_search_space
        self.metrics = list(to_container(metrics) or []) or None
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = max_retry
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher: Launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        if not self.directions:
            self.directions, why = default_directions(config)
            log.info("hydra.sweeper.direction not set: %s (%s)", "/".join(self.directions), why)
        if not self.study_name:
            experiment = (
                OmegaConf.select(config, "experiment", default=None)
                or OmegaConf.select(config, "hydra.job.name", default=None)
                or "dermsweep"
            )
            choice = OmegaConf.select(config, "hydra.runtime.choices.sweep", default=None)
            self.study_name = f"{experiment}-{choice}" if choice else f"{experiment}-sweep"

    def _custom_space(self) -> Any:
        if not self.custom_search_space:
            return None
        module, _, name = self.custom_search_space.rpartition(".")
        return getattr(importlib.import_module(module), name)

    def sweep(self, arguments: list[str]) -> Any:
        loader = self.hydra_context.config_loader
        space, fixed = search_space(self.params, self.params_given, self.search_space, arguments, loader)
        sampler_spec, sampler_extra, grid_size = _samplers.prepare(self.sampler_spec, space)
        if grid_size is not None and (self.n_trials is None or grid_size < self.n_trials):
            log.info("n_trials %s -> %d: the size of GridSampler's grid", self.n_trials, grid_size)
            self.n_trials = grid_size
        custom = self._custom_space()
        warm = _warm_start.check_entries(
            self.warm_start, space, fixed, log, define_by_run=bool(self.custom_search_space)
        )
        preflight(self.validate, self.config, loader, space, fixed, warm)
        assert self.study_name is not None
        opened = _study.open_study(
            _study.StudySettings(
                self.study_name,
                self.storage_url,
                self.directions,
                self.pruner_spec,
                self.metrics or default_metric_names(self.config, len(self.directions)),
                self.heartbeat_interval,
                self.grace_period,
                self.max_retry,
            ),
            sampler_spec,
            sampler_extra,
        )
        study, self.pruner_spec = opened.study, opened.pruner_spec
        log.info(
            "Study %s (%s), storage %s, sampler %s, n_trials=%s, n_jobs=%d%s",
            study.study_name,
            "/".join(self.directions),
            safe_url(self.storage_url),
            type(study.sampler).__name__,
            self.n_trials,
            self.n_jobs,
            f", timeout={format_duration(self.timeout)} of sweep time" if self.timeout is not None else "",
        )
        log.info("Search space: %s", ", ".join(f"{k}={describe(v)}" for k, v in space.items()))
        if fixed:
            log.info("Fixed: %s", " ".join(override_line(k, v) for k, v in fixed.items()))
        parent = self._parent(study, space, opened.created)
        from_mlflow = None
        if self.warm_start_from:
            spec = self.warm_start_from
            from_mlflow = lambda: _warm_start.entries_from_mlflow(spec, space, self.config, self.directions[0])  # noqa: E731
        grid = str(self.sampler_spec.get("_target_")) == _samplers.GRID
        _warm_start.enqueue(study, warm, from_mlflow, self.n_trials, grid)
        slots = _slots.Slots(self.n_trials, self.n_jobs, self.timeout)
        trial_link.register_local_study(study)
        status = "FAILED"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
                self._loop(study, space, fixed, custom, parent, slots)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            self.stop_reason = "interrupted (Ctrl-C): running trials were given back, a re-run resumes them"
            raise
        except BaseException as exc:
            if not self.stop_reason.startswith("max_failure_rate"):
                self.stop_reason = f"error: {type(exc).__name__}: {exc}"
            raise
        finally:
            self.stop_reason = self.stop_reason or slots.stop_reason
            trial_link.unregister_local_study(study)
            log.info("Sweep stopped: %s", self.stop_reason or status)
            if parent is not None:
                parent.finalize(study, status=status, plots=self.plots, stop_reason=self.stop_reason or None)
        result = _outcome.write_results(study, self.directions, self.sweep_dir)
        if "best_value" in result:
            log.info(
                "Best %s %.6g: %s (%s)",
                (study.metric_names or ["value"])[0],
                result["best_value"],
                " ".join(f"{k}={v}" for k, v in result["best_params"].items()),
                self.sweep_dir / "optimization_results.yaml",
            )
        else:
            log.info("Results: %s", self.sweep_dir / "optimization_results.yaml")
        return None

    def _parent(self, study: optuna.Study, space: dict[str, BaseDistribution], created: bool) -> Any:
        """The study's MLflow parent run (None: no MLflow; the sweep goes on without it)."""
        settings = _parent.SweepSettings(
            space, self.sampler_spec, self.pruner_spec, self.n_trials, self.timeout, self.n_jobs, self.directions
        )
        parent = _parent.open_parent(study, self.config, settings, self.storage_url, created)
        if parent is not None:
            parent_run.write_parent_file(self.sweep_dir, parent.run_id)
        return parent

    def _loop(
        self,
        study: optuna.Study,
        space: dict[str, BaseDistribution],
        fixed: dict[str, str],
        custom: Any,
        parent: Any,
        slots: _slots.Slots,
    ) -> None:
        storage_url = self.storage_url if self.storage_url not in ("memory", ":memory:", "") else None
        parent_id = parent.run_id if parent is not None else None
        # trials' owner records: dead sweeps' trials are failed at once on their machine, and elsewhere by the
        # records' own heartbeat where the storage keeps none (journal files)
        beat = None if optuna_private.heartbeat_enabled(study) else self.heartbeat_interval
        clock = _outcome.Clock()
        while True:
            # first: a dead owner on this machine is a sure (and more precise) verdict than a stale heartbeat
            trial_owner.fail_dead(study, trial_owner.stale_limit(beat, self.grace_period), self.max_retry)
            optuna.storages.fail_stale_trials(study)
            if parent is not None:
                parent.close_orphans(study)
            taken = _slots.counted(study)
            to_go = slots.budget_left(study, taken)
            if to_go <= 0:
                running = _slots.running_with_heartbeat(study, taken)
                if running:
                    # Other workers' trials (or a dead sweep's, until their heartbeat goes stale): wait, since a
                    # stale one is failed and re-enqueued for us to run, and the summary should be complete.
                    log.info("waiting for running trials %s (other workers or stale)", running)
                    time.sleep(min(5.0, float(self.heartbeat_interval)))
                    continue
                break
            trials = slots.ask(study, min(self.n_jobs, to_go), beat)
            if not trials:
                continue
            try:
                batch = [self._job_overrides(study, t, space, fixed, custom, storage_url, parent_id) for t in trials]
                log.info("Launching trials %s", [t.number for t in trials])
                clock.start([t.number for t in trials])
                hide_link_overrides(self.launcher)
                with _slots.Heartbeat(study, [optuna_private.trial_id(t) for t in trials]):
                    returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            except BaseException:
                # Ctrl-C, a bad search space, a broken launcher (not a job's failure): give the trials back
                for t in trials:
                    try:
                        _slots.release(study, t, reason=void.INTERRUPTED)
                    except Exception as exc:
                        log.warning("trial %d left as is: %s", t.number, exc)
                raise
            self.job_idx += len(returns)
            results = []
            for t, ret in zip(trials, returns, strict=False):
                state, reason = _outcome.tell(study, t, ret, len(self.directions), self.metrics)
                results.append((ret, state, reason))
                n_done = sum(1 for x in _slots.counted(study) if x.state != TrialState.RUNNING)
                log.info(_outcome.trial_line(study, t, state, n_done, self.n_trials, clock.seconds(t.number)))
            self.pruner_spec = _study.pin_pruner(study, self.pruner_spec)
            if parent is not None:
                parent.log_progress(study, finished=[t.number for t in trials])
            try:
                _outcome.check_failure_rate(results, self.max_failure_rate)
            except BaseException as exc:
                self.stop_reason = f"max_failure_rate={self.max_failure_rate} exceeded: {exc}"
                raise

    def _job_overrides(
        self,
        study: optuna.Study,
        t: optuna.Trial,
        space: dict[str, BaseDistribution],
        fixed: dict[str, str],
        custom: Any,
        storage_url: str | None,
        parent_id: str | None,
    ) -> tuple[str, ...]:
        for name, dist in space.items():
            optuna_private.suggest(t, name, dist)
        if custom is not None:
            custom(self.config, t)
        for name, value in fixed.items():
            if not name.startswith("~"):
                t.set_user_attr(name, value)
        env = trial_link.job_env(study.study_name, storage_url, optuna_private.trial_id(t), t.number, parent_id)
        return (
            tuple(f"{n}={v}" for n, v in t.params.items())
            + tuple(override_line(n, v) for n, v in fixed.items())
            + env_overrides(env)
        )
