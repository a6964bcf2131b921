"""Recording outcomes: a job's return as the trial's values, pruning or failure; the line each finished trial
prints; the failure-rate stop; and the sweep's optimization_results.yaml."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

import optuna
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf
from optuna.trial import TrialState

from ._links import trial_link
from ._options import format_duration

log = logging.getLogger(__name__)

FAILURE_REASON_ATTR = "dermsweep.failure_reason"


def values(ret: Any, n_directions: int, metrics: list[str] | None) -> list[float]:
    """The objective values a job returned (a number, a list, or a {metric: value} mapping)."""
    if isinstance(ret, MutableMapping) or OmegaConf.is_dict(ret):
        ret = dict(ret)
        if metrics:
            missing = [m for m in metrics if m not in ret]
            if missing:
                raise ValueError(f"the task returned {sorted(ret)}, the sweep needs {metrics}")
            vals = [ret[m] for m in metrics]
        else:
            vals = list(ret.values())
    elif isinstance(ret, (list, tuple)):
        vals = list(ret)
    else:
        vals = [ret]
    if len(vals) != n_directions:
        raise ValueError(f"the task returned {len(vals)} value(s) for {n_directions} direction(s): {ret!r}")
    out = [float(v) for v in vals]
    if any(math.isnan(v) or math.isinf(v) for v in out):
        raise ValueError(f"the task returned a non-finite objective: {out}")
    return out


def _tell_study(study: optuna.Study, trial: optuna.Trial, **kwargs: Any) -> None:
    try:
        study.tell(trial, skip_if_finished=True, **kwargs)
    except RuntimeError as exc:
        # GridSampler stops the study when its grid is done, which Optuna refuses outside study.optimize();
        # the trial's result is stored before that (as upstream, which ignores it too)
        if "Study.stop" not in str(exc):
            raise


def tell(
    study: optuna.Study, trial: optuna.Trial, ret: JobReturn, n_directions: int, metrics: list[str] | None
) -> tuple[TrialState, str]:
    """Record the job's outcome; (state, failure reason or "")."""
    if ret.status == JobStatus.COMPLETED:
        try:
            vals = values(ret._return_value, n_directions, metrics)
        except (TypeError, ValueError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        else:
            _tell_study(study, trial, values=vals)
            return TrialState.COMPLETE, ""
    else:
        error = ret._return_value
        if isinstance(error, optuna.TrialPruned) or type(error).__name__ == "TrialPruned":
            _tell_study(study, trial, state=TrialState.PRUNED)
            return TrialState.PRUNED, ""
        reason = f"{type(error).__name__}: {error}"
    log.warning("trial %d failed: %s", trial.number, reason)
    try:
        trial.set_user_attr(FAILURE_REASON_ATTR, reason[:5000])
    except Exception:
        pass
    _tell_study(study, trial, state=TrialState.FAIL)
    return TrialState.FAIL, reason


def check_failure_rate(results: list[tuple[JobReturn, TrialState, str]], max_failure_rate: float) -> None:
    """hydra-optuna-sweeper's max_failure_rate: after each batch, more failed trials than max_failure_rate of
    the batch stops the sweep by raising the first failed job's own exception."""
    failed = [(ret, reason) for ret, state, reason in results if state == TrialState.FAIL]
    if not failed or len(failed) / len(results) <= max_failure_rate:
        return
    log.error(
        "Failed %d times out of %d with max_failure_rate=%s: stopping the sweep",
        len(failed),
        len(results),
        max_failure_rate,
    )
    for ret, _reason in failed:
        if ret.status == JobStatus.FAILED and isinstance(ret._return_value, BaseException):
            ret.return_value  # noqa: B018  (JobReturn raises the job's exception, with its traceback)
    raise ValueError(f"trial failed ({failed[0][1]}) and max_failure_rate={max_failure_rate}")


def _number(v: float) -> str:
    return f"{v:.4g}"


def trial_line(
    study: optuna.Study, trial: optuna.Trial, state: TrialState, n_counted: int, n_trials: int | None, seconds: float
) -> str:
    """One line for a finished trial: "trial 2 COMPLETE  val_score=0.7132  best 0.7310 (trial 1)  3/5  1m04s"."""
    names = study.metric_names or ["value"]
    frozen = study.get_trials(deepcopy=False)
    mine = next((t for t in frozen if t.number == trial.number), None)
    parts = [f"trial {trial.number} {state.name}"]
    if mine is not None and state == TrialState.COMPLETE and mine.values:
        parts.append("  ".join(f"{n}={_number(v)}" for n, v in zip(names, mine.values, strict=False)))
    elif mine is not None and state == TrialState.PRUNED and mine.last_step is not None:
        value = _number(mine.intermediate_values[mine.last_step])
        folds = mine.user_attrs.get(trial_link.FOLDS_ATTR)
        if folds:  # a cross-validation trial reports its running mean after each fold (step = fold)
            parts.append(f"after fold {mine.last_step + 1} of {folds} (mean so far {value})")
        else:
            parts.append(f"at step {mine.last_step} ({value})")
    complete = [t for t in frozen if t.state == TrialState.COMPLETE]
    if complete and len(study.directions) == 1:
        best = study.best_trial
        parts.append(f"best {_number(best.values[0])} (trial {best.number})")
    elif complete:
        parts.append(f"{len(study.best_trials)} on the Pareto front")
    parts.append(f"{n_counted}/{n_trials}" if n_trials is not None else f"{n_counted} done")
    parts.append(format_duration(seconds))
    return "  ".join(parts)


class Clock:
    """When each trial of this process was launched, for the trial lines."""

    def __init__(self) -> None:
        self._started: dict[int, float] = {}

    def start(self, numbers: list[int]) -> None:
        now = time.monotonic()
        self._started.update(dict.fromkeys(numbers, now))

    def seconds(self, number: int) -> float:
        return time.monotonic() - self._started.pop(number, time.monotonic())


def write_results(study: optuna.Study, directions: list[str], sweep_dir: Path) -> dict[str, Any]:
    """optimization_results.yaml in the sweep dir (hydra-optuna-sweeper's file); returns what it holds."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    result: dict[str, Any] = {"name": "optuna", "study_name": study.study_name}
    if complete and len(directions) == 1:
        result["best_params"] = study.best_params
        result["best_value"] = study.best_value
    elif complete:
        result["solutions"] = [{"number": t.number, "params": t.params, "values": t.values} for t in study.best_trials]
    sweep_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(
        OmegaConf.create(json.loads(json.dumps(result, default=str))), sweep_dir / "optimization_results.yaml"
    )
    return result
