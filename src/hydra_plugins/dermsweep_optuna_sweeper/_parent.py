"""The sweep's MLflow parent run as the sweeper opens it: the sweep's settings as params and a description."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.distributions import BaseDistribution

from ._links import parent_run
from ._options import describe_component, format_duration, safe_url
from ._search_space import describe
from ._study import fresh

log = logging.getLogger(__name__)


@dataclass
class SweepSettings:
    space: dict[str, BaseDistribution]
    sampler_spec: Any
    pruner_spec: Any
    n_trials: int | None
    timeout: float | None
    n_jobs: int
    directions: list[str]

    @property
    def budget(self) -> str:
        return "none" if self.timeout is None else format_duration(self.timeout)

    def params(self, metric_names: list[str] | None) -> dict[str, str]:
        """The parent run's params: each searched key in the grammar, the sampler, pruner and budget."""
        out = {f"search.{k}": describe(v) for k, v in self.space.items()}
        out.update(
            {
                "sweeper.sampler": describe_component(self.sampler_spec),
                "sweeper.pruner": describe_component(self.pruner_spec),
                "sweeper.n_trials": "unlimited" if self.n_trials is None else str(self.n_trials),
                "sweeper.timeout": self.budget,
                "sweeper.n_jobs": str(self.n_jobs),
                "sweeper.directions": ",".join(self.directions),
                "sweeper.metrics": ",".join(metric_names or []),
            }
        )
        return out

    def description(self, study_name: str, metric_names: list[str] | None, storage: str) -> str:
        objective = ", ".join(f"{d} {n}" for d, n in zip(self.directions, metric_names or ["value"], strict=False))
        n_trials = "unlimited" if self.n_trials is None else self.n_trials
        return (
            f"Optuna sweep of study {study_name}: {objective} over {len(self.space)} parameter(s) "
            f"({', '.join(self.space)}), {describe_component(self.sampler_spec)}, pruner "
            f"{describe_component(self.pruner_spec)}; budget n_trials={n_trials}, timeout={self.budget}. "
            f"Study storage: {storage}. The trials are this run's children; study/ holds trials.csv, summary.json, "
            "time_to_quality and the plots; sweep/best_value_by_second has seconds of sweep time as its step."
        )


def open_parent(
    study: optuna.Study, config: Any, settings: SweepSettings, storage_url: str | None, created: bool
) -> Any:
    """Find or make the study's parent run (sweep.parent_run.SweepParent) and record the sweep's settings on it;
    None when MLflow cannot be reached (logged: the sweep goes on without it)."""
    storage = safe_url(storage_url)
    try:
        uri, experiment, artifact_root = parent_run.tracking_settings(config)
        parent = parent_run.SweepParent.open(
            uri,
            experiment,
            artifact_root,
            study.study_name,
            tags=parent_run.sweep_tags(storage, settings.directions, settings.n_trials, settings.budget),
            created_study=created,
            fresh_study=fresh(study),
            params=settings.params(study.metric_names),
            description=settings.description(study.study_name, study.metric_names, storage),
        )
        study.set_user_attr("mlflow_parent_run_id", parent.run_id)
        return parent
    except Exception as exc:
        log.warning("no MLflow parent run for the sweep: %s", exc)
        return None
