"""The search-space grammar: Hydra sweep overrides to Optuna distributions (and back, for messages and params).

Same semantics as facebookresearch/hydra's hydra-optuna-sweeper:
    choice(a, b, c)                 -> CategoricalDistribution
    range(1, 10) / range(1, 10, 2)  -> IntDistribution(1, 10, step)       (upper bound INCLUDED, like upstream)
    range(0, 1, step=0.1)           -> FloatDistribution(0, 1, step=0.1)
    shuffle(range(...))             -> CategoricalDistribution of the range's values
    interval(0.1, 1)                -> FloatDistribution(0.1, 1)  (Hydra parses interval bounds as floats)
    tag(log, interval(1e-5, 1e-2))  -> FloatDistribution(1e-5, 1e-2, log=True)
    tag(log, int, interval(8, 512)) -> IntDistribution(8, 512, log=True)  (dermsweep addition: tag "int")
    a plain value                   -> fixed: passed to every job unchanged
    ~key, ~key=value                -> a delete override, passed to every job unchanged
A range whose bounds are reversed, or a log scale from 0 or below, is a SweepSettingsError naming the override.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, MutableMapping, Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from ._options import SweepSettingsError
from ._warm_start import describe

__all__ = [
    "create_distribution_from_override",
    "describe",
    "distributions_from_search_space",
    "env_overrides",
    "override_line",
    "parse_search_space",
    "search_space",
]


def _quote(value: str) -> str:
    """A Hydra override value that parses back to exactly ``value``."""
    # Hydra's quoted strings: only quotes (and backslashes right before them) are escaped
    return "'" + value.replace("'", "\\'") + "'"


def env_overrides(env: dict[str, str]) -> tuple[str, ...]:
    # ++ : add or replace (the user's config may already have hydra.job.env_set entries)
    return tuple(f"++hydra.job.env_set.{k}={_quote(v)}" for k, v in env.items())


def create_distribution_from_override(override: Override) -> Any:
    """An Optuna distribution for a sweep override, or the value string for a plain (fixed) override."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()

    value = override.value()
    if override.is_choice_sweep():
        if not isinstance(value, ChoiceSweep):  # glob(...) needs the config's keys: not a search space
            raise NotImplementedError(f"{override.input_line} is not supported by the Optuna sweeper")
        choices: list[CategoricalChoiceType] = []
        for x in override.sweep_iterator(transformer=Transformer.encode):
            assert isinstance(x, (str, int, float, bool, type(None)))
            choices.append(x)
        return CategoricalDistribution(choices)

    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        assert value.start is not None and value.stop is not None
        if value.shuffle:
            shuffled: list[Any] = list(override.sweep_iterator(transformer=Transformer.encode))
            return CategoricalDistribution(shuffled)
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))

    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        assert value.start is not None and value.end is not None
        log_scale = "log" in value.tags
        # Hydra parses interval bounds as floats; tag "int" asks for integers (an addition to upstream's grammar)
        if "int" in value.tags or (isinstance(value.start, int) and isinstance(value.end, int)):
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)

    raise NotImplementedError(f"{override.input_line} is not supported by the Optuna sweeper (glob sweep?)")


def parse_search_space(
    params: MutableMapping[str, Any] | None, arguments: Sequence[str], config_loader: Any = None
) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(search space, fixed overrides) from the sweeper's ``params`` and the command line (which wins)."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()]
    lines.extend(arguments)
    parser = OverridesParser.create(config_loader=config_loader)
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parser.parse_overrides(lines):
        key = override.get_key_element()
        if override.is_delete():  # "~key" or "~key=value": kept as written (key "~key")
            space.pop(key[1:], None)
            fixed[key] = str(override.input_line)
            continue
        try:
            dist = create_distribution_from_override(override)
        except ValueError as exc:  # Optuna's own check, e.g. `low <= high` must hold
            raise SweepSettingsError(f"{override.input_line}: {_plain(exc)}") from None
        space.pop(key, None)
        fixed.pop(key, None)
        if isinstance(dist, BaseDistribution):
            space[key] = dist
        else:
            fixed[key] = dist
    return space, fixed


def override_line(key: str, value: str) -> str:
    """The override for a fixed entry of parse_search_space (a delete override is stored as written)."""
    return value if key.startswith("~") else f"{key}={value}"


def distributions_from_search_space(search_space: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """hydra-optuna-sweeper's deprecated ``search_space`` form: {key: {type, low, high, step, log, choices}}."""
    out: dict[str, BaseDistribution] = {}
    for key, spec in search_space.items():
        spec = dict(spec)
        kind = str(getattr(spec.get("type"), "name", spec.get("type")))
        log_scale, step = bool(spec.get("log", False)), spec.get("step")
        if kind == "categorical":
            out[str(key)] = CategoricalDistribution(list(spec["choices"]))
        elif kind == "int":
            out[str(key)] = IntDistribution(
                int(spec["low"]), int(spec["high"]), log=log_scale, step=1 if log_scale or step is None else int(step)
            )
        elif kind == "float":
            out[str(key)] = FloatDistribution(
                float(spec["low"]),
                float(spec["high"]),
                log=log_scale,
                step=None if log_scale or step is None else float(step),
            )
        else:
            raise NotImplementedError(f"hydra.sweeper.search_space.{key}: type {kind!r} is not int|float|categorical")
    return out


def _plain(exc: ValueError) -> str:
    """Optuna's message about a distribution in the grammar's words."""
    text = str(exc)
    if "low <= high" in text or "low < high" in text or "`low` <= `high`" in text:
        return "the lower bound is above the upper bound: write the smaller value first"
    if "log" in text and ("low" in text or "> 0" in text):
        return "a log scale needs a lower bound above 0"
    return text


def search_space(
    params: MutableMapping[str, Any] | None,
    params_given: bool,
    deprecated: Mapping[str, Any] | None,
    arguments: Sequence[str],
    config_loader: Any,
) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """The search space and fixed overrides from params (or the deprecated search_space) and the command line."""
    space, fixed = parse_search_space(params, arguments, config_loader)
    if deprecated:
        if params_given:
            warnings.warn(
                "Both hydra.sweeper.params and hydra.sweeper.search_space are configured: "
                "hydra.sweeper.params defines the search space.",
                UserWarning,
                stacklevel=3,
            )
        else:
            warnings.warn(
                "hydra.sweeper.search_space is deprecated (hydra-optuna-sweeper 1.2): use hydra.sweeper.params",
                UserWarning,
                stacklevel=3,
            )
            base = distributions_from_search_space(deprecated)
            space = {**{k: v for k, v in base.items() if k not in fixed and f"~{k}" not in fixed}, **space}
    return space, fixed
