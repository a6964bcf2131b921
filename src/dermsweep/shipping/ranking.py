"""Which runs are best: the finished runs of an experiment or sweep, ranked by a metric, with the
hyperparameters that differ between them. `dermsweep runs` shows it; promotion picks its candidate from it."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import DermsweepError
from ..tracking import run_format as rf
from ..tracking.candidates import candidate_runs
from ..tracking.model_ref import RUN_ID
from ..tracking.store import first_line

DEFAULT_OBJECTIVE = "val_balanced_accuracy"


class RegistryError(DermsweepError):
    """The tracking store or Model Registry could not be read or changed as asked."""


class NoEligibleRun(DermsweepError):
    """No finished run with a logged model and the metric to rank by."""


@dataclass
class RunRow:
    run_id: str
    name: str
    status: str
    role: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    start_time: int
    has_model: bool = False

    @property
    def split_id(self) -> str | None:
        return self.tags.get(rf.SPLIT_ID)

    def metric(self, name: str) -> float | None:
        """The run's value of `name` (any spelling, current or legacy run format), None if absent or NaN."""
        return number(rf.read(self.metrics, name))

    def params_count(self) -> int | None:
        """The model's parameter count (param model.params), None if the run did not log it."""
        try:
            return int(float(self.params["model.params"]))
        except (KeyError, ValueError):
            return None

    def teacher_saw_validation(self) -> str | None:
        """What to tell of a distilled run whose teacher trained on its validation images; None for any other."""
        saw = self.tags.get(rf.TEACHER_SAW_VALIDATION)
        return f"teacher trained on its validation images ({saw}): validation leans optimistic" if saw else None

    def results(self) -> dict[str, float]:
        """Final validation and test figures under their current names (what tables and versions show)."""
        out = {}
        for key, value in self.metrics.items():
            if rf.is_result(key) and number(value) is not None:
                out[rf.canonical(key)] = value
        return out


@dataclass
class RunsTable:
    experiment: str
    sweep: str | None
    metric: str
    direction: str
    rows: list[RunRow]
    differing: list[str]  # param keys whose values differ between the rows

    def to_json(self) -> dict:
        return {
            "experiment": self.experiment,
            "sweep": self.sweep,
            "metric": self.metric,
            "direction": self.direction,
            "differing_params": self.differing,
            "runs": [
                {
                    "run_id": r.run_id,
                    "name": r.name,
                    "status": r.status,
                    "role": r.role,
                    "has_model": r.has_model,
                    "split_id": r.split_id,
                    "metric": r.metric(self.metric),
                    "metrics": dict(sorted(r.results().items())),
                    "params": {k: r.params.get(k) for k in self.differing},
                }
                for r in self.rows
            ],
        }


def number(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def direction_of(metric: str, rows: list[RunRow]) -> str:
    """The direction the runs' own objective tag gives for `metric`, else maximize (minimize for losses)."""
    base = rf.base_name(metric)
    for r in rows:
        objective = r.tags.get(rf.OBJECTIVE_METRIC)
        if (
            objective
            and rf.base_name(objective) == base
            and r.tags.get(rf.OBJECTIVE_DIRECTION) in ("maximize", "minimize")
        ):
            return r.tags[rf.OBJECTIVE_DIRECTION]
    return "minimize" if base.endswith("loss") else "maximize"


def _experiment(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments(max_results=20)) or "none"
        raise NoEligibleRun(f"no experiment named {experiment!r} in this tracking store (experiments: {names})")
    return exp


def _sweep_filter(client, exp_id: str, sweep: str) -> str:
    """Filter string selecting a sweep's trials. sweep = parent run id or study name."""
    if RUN_ID.match(sweep):
        return f"tags.`{rf.PARENT_RUN_ID}` = '{sweep}'"
    by_study = f"tags.`{rf.STUDY_NAME}` = '{sweep}'"
    if not client.search_runs([exp_id], filter_string=by_study, max_results=1):
        raise NoEligibleRun(
            f"no sweep {sweep!r}: give a sweep's parent run id or its study name (`dermsweep runs` shows study names)"
        )
    return by_study


def collect_runs(
    client, experiment: str, sweep: str | None = None, metric: str | None = None, finished_only: bool = False
) -> RunsTable:
    """All candidate runs (rf.is_candidate: trials, single runs, ensembles) of the experiment (or sweep), best
    first by `metric` (default: the runs' objective)."""
    exp = _experiment(client, experiment)
    filters = []
    if sweep:
        filters.append(_sweep_filter(client, exp.experiment_id, sweep))
    if finished_only:
        filters.append(f"tags.`{rf.STATUS}` = 'finished'")
    try:  # the candidate rule is the run format's (rf.is_candidate), shared with a sweep's warm start
        runs = candidate_runs(client, [exp.experiment_id], " and ".join(filters))
    except Exception as exc:
        raise RegistryError(f"cannot search runs: {first_line(exc)}") from exc
    rows = [
        RunRow(
            r.info.run_id,
            r.info.run_name or "",
            r.data.tags.get(rf.STATUS, r.info.status.lower()),
            r.data.tags.get(rf.ROLE, ""),
            dict(r.data.metrics),
            dict(r.data.params),
            dict(r.data.tags),
            r.info.start_time or 0,
        )
        for r in runs
    ]
    if rows:
        modelled = _runs_with_model(exp.experiment_id)
        for r in rows:
            r.has_model = r.run_id in modelled
    if metric is None:
        objectives = [r.tags[rf.OBJECTIVE_METRIC] for r in rows if r.tags.get(rf.OBJECTIVE_METRIC)]
        metric = max(set(objectives), key=objectives.count) if objectives else DEFAULT_OBJECTIVE
    metric = rf.canonical(metric)
    direction = direction_of(metric, rows)
    sign = -1.0 if direction == "maximize" else 1.0

    def key(r: RunRow):
        v = r.metric(metric)
        return (v is None, 0.0 if v is None else sign * v, r.start_time)

    rows.sort(key=key)
    return RunsTable(experiment, sweep, metric, direction, rows, _differing_params(rows))


def fits(row: RunRow, max_params: int) -> bool:
    """Within the parameter limit; a run that logged no parameter count (an older dermsweep's) is not: a phone's
    budget is not met by not knowing."""
    count = row.params_count()
    return count is not None and count <= max_params


def best_candidate(
    client, experiment: str, sweep: str | None = None, metric: str | None = None, max_params: int | None = None
) -> tuple[RunRow, RunsTable]:
    """The best finished run with a model and the metric, within `max_params` parameters when given."""
    table = collect_runs(client, experiment, sweep, metric, finished_only=True)
    eligible = [r for r in table.rows if r.has_model and r.metric(table.metric) is not None]
    within = [r for r in eligible if max_params is None or fits(r, max_params)]
    if not within:
        scope = f"sweep {sweep!r}" if sweep else f"experiment {experiment!r}"
        over = len(eligible) - len(within)
        raise NoEligibleRun(
            f"no eligible run in {scope}: need tag {rf.STATUS}=finished, a logged model and metric "
            f"{table.metric} ({len(table.rows)} finished run(s), "
            f"{sum(r.has_model for r in table.rows)} with a model"
            + (f", {over} over the {max_params:,}-parameter limit" if over else "")
            + ")"
        )
    return within[0], table


def _runs_with_model(experiment_id: str) -> set[str]:
    import mlflow

    try:
        models = mlflow.search_logged_models(
            experiment_ids=[experiment_id], filter_string=f"name = '{rf.MODEL}'", output_format="list"
        )
    except Exception:
        return set()
    return {m.source_run_id for m in models if m.source_run_id}


# Params a run records about itself rather than chose (counts, ids, paths, versions, the machine): never
# hyperparameters, so never "differing" ones (`dermsweep runs` showed data.n_test and model.weights_source).
NOT_HYPERPARAMETERS = (
    "tracking.", "hydra.", "run_name", "git.", "model.params", "provenance.", "host.", "hardware.", "paths.",
    "cache_dir", "experiment", "data.split_id", "data.dataset_id", "data.class_names", "data.n_", "data.skipped",
    "model.weights_source", "trainer.steps_per_epoch_used", "verbose",
)  # fmt: skip


def _differing_params(rows: list[RunRow]) -> list[str]:
    keys = sorted({k for r in rows for k in r.params})
    chosen = [k for k in keys if k == "hardware.backend" or not k.startswith(NOT_HYPERPARAMETERS)]
    # among the runs that record the key: an ensemble (no training params) or an older run (a key added since) is
    # not a different value
    return [k for k in chosen if len({r.params[k] for r in rows if k in r.params}) > 1]
