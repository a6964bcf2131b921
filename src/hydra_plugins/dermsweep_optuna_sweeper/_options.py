"""The sweeper's settings read from hydra.sweeper: durations, directions, containers, URLs for messages, and the
error that reports a wrong setting in one line."""

from __future__ import annotations

import math
import re
from typing import Any

from hydra.errors import CompactHydraException
from omegaconf import DictConfig, OmegaConf

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(h|hours?|m|min|minutes?|s|sec|seconds?)", re.IGNORECASE)


class SweepSettingsError(CompactHydraException, ValueError):
    """A wrong sweep setting or search space: Hydra prints a CompactHydraException as its message alone, one line,
    where any other error from a sweeper gets a traceback."""


def parse_timeout(value: Any) -> float | None:
    """hydra.sweeper.timeout in seconds: a number of seconds (Optuna's unit) or a string such as "90m", "3h",
    "1h30m", "45s". null = no time budget."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise SweepSettingsError(f"hydra.sweeper.timeout={value!r}: give seconds or a duration such as 90m, 3h, 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or _DURATION.sub("", text).strip():
                raise SweepSettingsError(
                    f"hydra.sweeper.timeout={value!r}: give seconds or a duration such as 90m, 3h, 1h30m"
                ) from None
            unit_s = {"h": 3600.0, "m": 60.0, "s": 1.0}
            seconds = sum(float(n) * unit_s[u[0].lower()] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise SweepSettingsError(f"hydra.sweeper.timeout={value!r}: must be more than 0 (null = no time budget)")
    return seconds


def format_duration(seconds: float) -> str:
    """3725 -> "1h02m05s"; 59.5 -> "59.5s"."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


def directions(direction: Any) -> list[str]:
    """hydra.sweeper.direction (a name, an enum, or a list of them) as ["maximize" | "minimize", ...]."""
    if isinstance(direction, str) or hasattr(direction, "name"):
        dirs = [str(getattr(direction, "name", direction))]
    else:
        dirs = [str(getattr(d, "name", d)) for d in direction]
    for d in dirs:
        if d.lower() not in ("maximize", "minimize"):
            raise SweepSettingsError(f"hydra.sweeper.direction: {d!r} is not maximize|minimize")
    return [d.lower() for d in dirs]


def default_directions(config: Any) -> tuple[list[str], str]:
    """Directions when hydra.sweeper.direction is null: the task config's objective.direction (dermsweep's
    train.py has one), else hydra-optuna-sweeper's default, minimize. (directions, where they came from)"""
    wanted = OmegaConf.select(config, "objective.direction", default=None)
    if isinstance(wanted, str) or OmegaConf.is_list(wanted):
        return directions(to_container(wanted)), "objective.direction"
    return ["minimize"], "hydra-optuna-sweeper's default"


def default_metric_names(config: Any, n: int) -> list[str] | None:
    """Names for the study's objectives when hydra.sweeper.metrics is not set: the task config's
    objective.metric (one name, or a list as long as the directions), else None."""
    wanted = to_container(OmegaConf.select(config, "objective.metric", default=None))
    names = [wanted] if isinstance(wanted, str) else wanted
    if isinstance(names, list) and len(names) == n and all(isinstance(x, str) and x for x in names):
        return [str(x) for x in names]
    return None


def to_container(x: Any) -> Any:
    if isinstance(x, DictConfig) or OmegaConf.is_config(x):
        return OmegaConf.to_container(x, resolve=True)
    return x


def safe_url(url: str | None) -> str:
    """Storage URL without a password, for tags and logs."""
    if not url:
        return "memory"
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


def describe_component(spec: Any) -> str:
    """A sampler or pruner spec as one readable line: TPESampler(seed=7, n_startup_trials=5)."""
    if not isinstance(spec, dict) or "_target_" not in spec:
        return str(spec)
    name = str(spec["_target_"]).rsplit(".", 1)[-1]
    args = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "_target_" and v is not None)
    return f"{name}({args})"
