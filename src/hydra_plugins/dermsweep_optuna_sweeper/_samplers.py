"""Samplers from ``hydra.sweeper.sampler``: checks that fail a sweep before it starts, and the keyword arguments
the sweeper adds (GridSampler's grid, nested ``_target_`` objects) where upstream relied on Hydra's instantiate."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

MOTPE = "optuna.samplers.MOTPESampler"
MOTPE_REMOVED = (
    "hydra/sweeper/sampler=motpe: Optuna removed MOTPESampler in 4.0 and TPESampler handles multi-objective "
    "studies: use `override hydra/sweeper/sampler: tpe` (or hydra.sweeper.sampler._target_=optuna.samplers.TPESampler)"
)
GRID = "optuna.samplers.GridSampler"
# Python packages a sampler imports only when it first samples: checked before the study exists.
NEEDS: dict[str, tuple[str, ...]] = {
    "optuna.samplers.CmaEsSampler": ("cmaes",),
    "optuna.samplers.GPSampler": ("torch", "scipy"),
    "optuna.samplers.QMCSampler": ("scipy",),
}
# Upstream keys Optuna 5 no longer honours: target -> {key: why a value other than null is refused}
RETIRED: dict[str, dict[str, str | None]] = {
    "optuna.samplers.CmaEsSampler": {
        "restart_strategy": "Optuna 4.4 removed CMA-ES restarts (IPOP/BIPOP now live in OptunaHub): remove "
        "hydra.sweeper.sampler.restart_strategy or use an OptunaHub sampler by _target_",
        "inc_popsize": None,  # only ever applied to restarts: dropped, whatever its value
    },
}


def _short(target: str) -> str:
    return target.rsplit(".", 1)[-1]


def grid_choices(name: str, dist: BaseDistribution) -> list[Any]:
    """A grid axis from a distribution, by hydra-optuna-sweeper's rule: a range's values from ``low`` in ``step``s,
    (high - low) // step of them, so the upper bound is left out as in Hydra's own range()."""
    if isinstance(dist, CategoricalDistribution):
        return list(dist.choices)
    if isinstance(dist, IntDistribution):
        return [dist.low + i * dist.step for i in range((dist.high - dist.low) // dist.step)]
    if isinstance(dist, FloatDistribution) and dist.step is not None:
        return [dist.low + i * dist.step for i in range(int((dist.high - dist.low) // dist.step))]
    raise ValueError(
        f"GridSampler only supports discrete distributions: {name} is {dist} "
        "(use choice(...) or range(...), or another sampler)"
    )


def _instantiate_nested(value: Any) -> Any:
    """A ``{_target_: ...}`` value inside the sampler's config becomes the object (e.g. independent_sampler), as
    Hydra's recursive instantiate did for upstream."""
    if isinstance(value, Mapping) and "_target_" in value:
        from hydra.utils import instantiate

        return instantiate(dict(value))
    return value


def prepare(spec: Any, space: Mapping[str, BaseDistribution]) -> tuple[dict[str, Any], dict[str, Any], int | None]:
    """(spec to instantiate, extra kwargs, grid size or None) for the sampler ``spec``; raises ValueError or
    ImportError for a sampler that cannot run here, before any study, trial or MLflow run exists."""
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        raise ValueError(f"hydra.sweeper.sampler needs a _target_ (or a hydra/sweeper/sampler option): {spec!r}")
    spec = dict(spec)
    target = str(spec["_target_"])
    if target == MOTPE:
        raise ValueError(MOTPE_REMOVED)
    missing = [m for m in NEEDS.get(target, ()) if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"hydra.sweeper.sampler: {_short(target)} needs the Python package(s) {missing}, which "
            f"Optuna does not install: pip install {' '.join(missing)}"
        )
    for key, why in RETIRED.get(target, {}).items():
        value = spec.pop(key, None)
        if value is not None and why is not None:
            raise ValueError(f"hydra.sweeper.sampler.{key}={value!r}: {why}")
    spec.pop("_partial_", None)  # upstream's mark for "the sweeper completes the call": done below for the grid
    extra = {k: _instantiate_nested(v) for k, v in spec.items() if isinstance(v, Mapping) and "_target_" in v}
    grid_size = None
    if target == GRID and "search_space" not in spec:
        grid = {name: grid_choices(name, dist) for name, dist in space.items()}
        extra["search_space"] = grid
        grid_size = 1
        for values in grid.values():
            grid_size *= len(values)
    return spec, extra, grid_size
