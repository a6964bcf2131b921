"""Warm start: known configurations enqueued (``study.enqueue_trial``) before the sampler takes over.

Two sources, keys as in ``params`` (the search space's override keys):
    hydra.sweeper.warm_start: [{model: mobilenet_v2, trainer.finetune.lr: 2e-4}, ...]   (checked strictly)
    hydra.sweeper.warm_start_from: {experiment: NAME, top_k: 3, metric: ..., ...}       (lenient: drops what
        does not fit this space, with a logged line)

A config-group key (``augment``) is read from a run's ``augment.name`` param: dermsweep's group options carry
their own name, and runs log the config flattened (``model.alpha``, ``trainer.finetune.lr``, ``augment.name``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

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
