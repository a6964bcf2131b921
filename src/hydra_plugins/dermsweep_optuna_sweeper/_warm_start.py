"""Warm start: known configurations enqueued (``study.enqueue_trial``) before the sampler takes over.

Two sources, keys as in ``params`` (the search space's override keys):
    hydra.sweeper.warm_start: [{model: mobilenet_v2, trainer.finetune.lr: 2e-4}, ...]   (checked strictly)
    hydra.sweeper.warm_start_from: {experiment: NAME, top_k: 3, metric: ..., ...}       (lenient: drops what
        does not fit this space, with a logged line)

A config-group key (``augment``) is read from a run's ``augment.name`` param: dermsweep's group options carry
their own name, and runs log the config flattened (``model.alpha``, ``trainer.finetune.lr``, ``augment.name``).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from typing import Any

from omegaconf import OmegaConf
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from ._links import parent_run, warm_start_runs

log = logging.getLogger(__name__)

# warm_start_from's keys and defaults (null = from the sweep: the task config's objective.metric, the sweep's
# first direction, the task config's tracking.uri)
FROM_DEFAULTS: dict[str, Any] = {
    "experiment": None,
    "top_k": 3,
    "metric": None,
    "direction": None,
    "tracking_uri": None,
    "filter": None,
}


def describe(dist: BaseDistribution) -> str:
    """A distribution in the search-space grammar, for messages."""
    if isinstance(dist, CategoricalDistribution):
        return "choice(" + ", ".join(map(str, dist.choices)) + ")"
    if isinstance(dist, IntDistribution):
        core = f"range({dist.low}, {dist.high}, {dist.step})" if not dist.log else f"interval({dist.low}, {dist.high})"
        return f"tag(log, int, {core})" if dist.log else core
    assert isinstance(dist, FloatDistribution)
    if dist.step is not None:
        return f"range({dist.low}, {dist.high}, step={dist.step})"
    core = f"interval({dist.low}, {dist.high})"
    return f"tag(log, {core})" if dist.log else core


def _number(raw: Any) -> float:
    if isinstance(raw, bool) or raw is None:
        raise ValueError("not a number")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError("not a number") from None
    if not math.isfinite(value):
        raise ValueError("not a finite number")
    return value


def coerce(dist: BaseDistribution, raw: Any) -> Any:
    """``raw`` (a YAML value, or the string a run logged) as a value of ``dist``; ValueError saying why not."""
    if isinstance(dist, CategoricalDistribution):
        for choice in dist.choices:  # the same value and type first (1 == True in Python)
            if type(choice) is type(raw) and choice == raw:
                return choice
        for choice in dist.choices:  # a logged string: "mobilenet_v2", "0.5", "True", "None"
            if str(choice) == str(raw):
                return choice
        for choice in dist.choices:  # 1 vs 1.0, "0.50" vs 0.5
            if isinstance(choice, int | float) and not isinstance(choice, bool):
                try:
                    if _number(raw) == float(choice):
                        return choice
                except ValueError:
                    pass
        raise ValueError(f"{raw!r} is not one of {describe(dist)}")
    value = _number(raw)
    if isinstance(dist, IntDistribution):
        if not value.is_integer():
            raise ValueError(f"{raw!r} is not an integer, as {describe(dist)} needs")
        number: int | float = int(value)
    else:
        assert isinstance(dist, FloatDistribution)
        number = value
    tolerance = 1e-12 * max(1.0, abs(dist.high), abs(dist.low))
    if not dist.low - tolerance <= number <= dist.high + tolerance:
        raise ValueError(f"{raw!r} is outside {describe(dist)}")
    step = dist.step
    if step is not None and not dist.log:
        k = (number - dist.low) / step
        if abs(k - round(k)) > 1e-8:
            raise ValueError(f"{raw!r} is not on the steps of {describe(dist)}")
    return min(max(number, dist.low), dist.high)  # a bound written with rounding noise


def _names(space: Mapping[str, BaseDistribution]) -> dict[str, str]:
    """The space's keys without Hydra's +/++ prefix -> the key as in params."""
    return {key.lstrip("+"): key for key in space}


def check_entries(
    entries: Any,
    space: Mapping[str, BaseDistribution],
    fixed: Mapping[str, str],
    log: Any,
    define_by_run: bool = False,
) -> list[tuple[str, dict[str, Any]]]:
    """hydra.sweeper.warm_start as [(label, {space key: value})]; ValueError for anything that does not fit (a key
    outside the space and not fixed, a value outside its range or choices). A key the sweep fixes is dropped with a
    warning when the values differ (the fixed value wins, as the command line wins over params). With a
    custom_search_space (``define_by_run``), other keys are passed on unchecked: that function suggests them."""
    if entries is None:
        return []
    if isinstance(entries, Mapping | str) or not hasattr(entries, "__iter__"):
        raise ValueError(
            "hydra.sweeper.warm_start must be a list of {key: value} mappings (keys as in hydra.sweeper.params), "
            f"got {entries!r}"
        )
    names = _names(space)
    fixed_names = {k.lstrip("+~"): v for k, v in fixed.items()}
    out: list[tuple[str, dict[str, Any]]] = []
    for i, entry in enumerate(entries):
        label = f"warm_start[{i}]"
        if not isinstance(entry, Mapping):
            raise ValueError(f"hydra.sweeper.{label} must be a mapping {{key: value}}, got {entry!r}")
        params: dict[str, Any] = {}
        for key, raw in entry.items():
            name = str(key).lstrip("+")
            if name in names:
                try:
                    params[names[name]] = coerce(space[names[name]], raw)
                except ValueError as exc:
                    raise ValueError(f"hydra.sweeper.{label}: {key}={raw!r}: {exc}") from None
            elif name in fixed_names:
                if str(raw) != str(fixed_names[name]):
                    log.warning(
                        "warm start %s: %s=%r ignored: the sweep fixes %s=%s", label, key, raw, name, fixed_names[name]
                    )
            elif define_by_run:
                params[str(key)] = raw
            else:
                raise ValueError(
                    f"hydra.sweeper.{label}: {key!r} is not a key of the search space "
                    f"({', '.join(sorted(names)) or 'empty'})"
                )
        if params:
            out.append((label, params))
        else:
            log.warning("warm start %s: no key of the search space left: skipped", label)
    return out


def from_spec(spec: Any) -> dict[str, Any] | None:
    """hydra.sweeper.warm_start_from as a complete dict; a plain string is the experiment's name."""
    if spec is None:
        return None
    if isinstance(spec, str):
        spec = {"experiment": spec}
    if not isinstance(spec, Mapping):
        raise ValueError(f"hydra.sweeper.warm_start_from must be an experiment name or a mapping, got {spec!r}")
    unknown = sorted(set(spec) - set(FROM_DEFAULTS))
    if unknown:
        raise ValueError(f"hydra.sweeper.warm_start_from: unknown key(s) {unknown}; known: {sorted(FROM_DEFAULTS)}")
    out = {**FROM_DEFAULTS, **dict(spec)}
    if not out["experiment"]:
        raise ValueError("hydra.sweeper.warm_start_from needs an experiment (the MLflow experiment's name)")
    try:
        out["top_k"] = int(out["top_k"])
    except (TypeError, ValueError):
        raise ValueError(f"hydra.sweeper.warm_start_from.top_k={out['top_k']!r} is not an integer") from None
    if out["top_k"] < 1:
        raise ValueError(f"hydra.sweeper.warm_start_from.top_k={out['top_k']}: must be at least 1")
    if out["direction"] is not None and str(out["direction"]).lower() not in ("maximize", "minimize"):
        raise ValueError(f"hydra.sweeper.warm_start_from.direction={out['direction']!r} is not maximize|minimize")
    return out


def from_run(params: Mapping[str, str], space: Mapping[str, BaseDistribution]) -> tuple[dict[str, Any], list[str]]:
    """A run's logged params mapped onto the search space: ({space key: value}, notes on what was dropped).

    A key is read from the param of the same name, a config group (``augment``) from ``<key>.name``. Keys the run
    did not log, and values outside this space, are left to the sampler (noted)."""
    entry: dict[str, Any] = {}
    notes: list[str] = []
    for name, key in _names(space).items():
        raw = params.get(name)
        if raw is None:
            raw = params.get(f"{name}.name")
        if raw is None:
            notes.append(f"{name}: not logged by the run (sampled)")
            continue
        try:
            entry[key] = coerce(space[key], raw)
        except ValueError as exc:
            notes.append(f"{name}={raw}: {exc} (dropped, sampled)")
    return entry, notes


# ----------------------------------------------------------------------------------------------- enqueueing
# Study user attr: the warm start was enqueued (JSON: how many, from where), so a resume or a second worker does
# not enqueue it again.
WARM_STARTED_ATTR = "dermsweep.warm_start.enqueued"


def enqueue(
    study: Any,
    warm: list[tuple[str, dict[str, Any]]],
    from_mlflow: Callable[[], list[tuple[str, dict[str, Any]]]] | None,
    n_trials: int | None,
    grid: bool,
) -> None:
    """Enqueue the warm-start configurations (the sweep file's, then ``from_mlflow()``'s), once per study: the
    study's user attr WARM_STARTED_ATTR says it was done, so a resume does not enqueue again."""
    if not warm and from_mlflow is None:
        return
    done = study.user_attrs.get(WARM_STARTED_ATTR)
    if done is not None:
        log.info("warm start: this study was seeded before (%s), not again", done)
        return
    queue = list(warm) + (from_mlflow() if from_mlflow is not None else [])
    seen: set[str] = set()
    unique: list[tuple[str, dict[str, Any]]] = []
    for label, entry in queue:
        key = json.dumps(entry, sort_keys=True, default=repr)
        if key in seen:
            log.info("warm start %s: the same configuration as an earlier one: skipped", label)
            continue
        seen.add(key)
        unique.append((label, entry))
    # mark first: a worker opening the study from now on leaves it alone (two opening it at the same moment
    # may both enqueue: the second copy of each label is voided when asked, see _slots.duplicate_warm_start)
    study.set_user_attr(WARM_STARTED_ATTR, json.dumps({"n": len(unique), "from": [lb for lb, _ in unique]}))
    for label, entry in unique:
        study.enqueue_trial(entry, user_attrs={warm_start_runs.WARM_START_ATTR: label})
        log.info("warm start %s enqueued: %s", label, entry)
    if n_trials is not None and len(unique) > n_trials:
        log.warning(
            "warm start: %d configurations enqueued, n_trials=%d: the rest wait in the queue for a later run "
            "with a larger n_trials",
            len(unique),
            n_trials,
        )
    if unique and grid:
        log.warning("warm start with GridSampler: the enqueued trials take n_trials slots from the grid")


def entries_from_mlflow(
    spec: Mapping[str, Any], space: Mapping[str, BaseDistribution], config: Any, direction: str
) -> list[tuple[str, dict[str, Any]]]:
    """The best runs of warm_start_from's experiment mapped onto the space (what does not fit is dropped, with
    a logged line per run)."""
    metric = spec["metric"] or OmegaConf.select(config, "objective.metric", default=None)
    if not metric:
        raise ValueError(
            "hydra.sweeper.warm_start_from.metric is needed: the task config has no objective.metric to default to"
        )
    direction = str(spec["direction"] or direction).lower()
    uri = spec["tracking_uri"] or parent_run.tracking_settings(config)[0]
    runs = warm_start_runs.best_runs(
        uri, str(spec["experiment"]), str(metric), direction, spec["top_k"], spec["filter"]
    )
    if not runs:
        log.warning(
            "warm start: no FINISHED run with %s in experiment %s: nothing enqueued from it", metric, spec["experiment"]
        )
    out: list[tuple[str, dict[str, Any]]] = []
    for run_id, value, params in runs:
        entry, notes = from_run(params, space)
        label = f"run {run_id}"
        other = differing(params, space, config)
        if other:
            notes.append("not searched here, this sweep's value kept: " + ", ".join(other))
        log.info(
            "warm start from %s (%s=%.6g): %s%s",
            label,
            metric,
            value,
            entry or "nothing fits this search space",
            "; " + "; ".join(notes) if notes else "",
        )
        if entry:
            out.append((label, entry))
    return out


def differing(
    params: Mapping[str, str], space: Mapping[str, BaseDistribution], config: Any, limit: int = 10
) -> list[str]:
    """Config keys a run logged with another value than this sweep's config has, outside the search space."""
    names = {k.lstrip("+") for k in space}
    skip = names | {f"{n}.name" for n in names}
    out: list[str] = []
    for key in sorted(params):
        if key in skip:
            continue
        try:
            here = OmegaConf.select(config, key, default=None, throw_on_resolution_failure=False)
        except Exception:
            continue
        if here is None or OmegaConf.is_config(here):
            continue
        if str(here) != params[key]:
            out.append(f"{key} (run {params[key]}, here {here})")
    return out[:limit] + ([f"{len(out) - limit} more"] if len(out) > limit else [])
