"""Value checks for configuration: each failure is a ConfigError that names the key, the value and what is valid.

Used by `training.config.validate` for the top-level keys and by every option registry (`options.Options`) for
the keys of one option, so the rule for a key lives next to the code that reads it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig

from .errors import ConfigError


def fail(key: str, value: Any, why: str) -> None:
    raise ConfigError(f"{key}={value!r}: {why}")


def select(cfg: Any, key: str) -> Any:
    """cfg's value at the dotted `key`, or None where a part is missing."""
    value = cfg
    for part in key.split("."):
        value = value.get(part) if isinstance(value, DictConfig | dict) else None
    return value


def number(
    key: str,
    value: Any,
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> float:
    """`value` as a number within [lo, hi] (bounds open where asked); raises ConfigError naming `key`."""
    if isinstance(value, bool) or not isinstance(value, int | float) or (integer and not isinstance(value, int)):
        fail(key, value, f"must be {'an integer' if integer else 'a number'}")
    if not math.isfinite(value):
        fail(key, value, "must be finite")
    below = value <= lo if lo_open else value < lo
    above = value >= hi if hi_open else value > hi
    if below or above:
        left, right = ("(" if lo_open else "["), (")" if hi_open else "]")
        hi_text = "inf" if hi == math.inf else f"{hi:g}"
        fail(key, value, f"must be in {left}{lo:g}, {hi_text}{right}")
    return value


def one_of(key: str, value: Any, allowed: Iterable[Any]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        fail(key, value, f"unknown; choose one of {', '.join(map(str, allowed))}")


def boolean(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        fail(key, value, "must be true or false")


class Range:
    """A numeric rule for one key, kept beside the option that reads the key (see options.Options)."""

    def __init__(
        self,
        lo: float,
        hi: float = math.inf,
        *,
        lo_open: bool = False,
        hi_open: bool = False,
        integer: bool = False,
    ) -> None:
        self.lo, self.hi, self.lo_open, self.hi_open, self.integer = lo, hi, lo_open, hi_open, integer

    def __call__(self, key: str, value: Any) -> None:
        number(key, value, self.lo, self.hi, lo_open=self.lo_open, hi_open=self.hi_open, integer=self.integer)
