"""Named implementations of one config group (schedule, class_weight, optimizer, backbone, data source).

Each group has one `Options` registry, filled next to the code that implements it::

    SCHEDULES = Options("schedule.name")

    @SCHEDULES.register("cosine", warmup_fraction=Range(0, 0.5), alpha=Range(0, 1))
    def cosine(cfg, lr, steps_per_epoch, epochs): ...

Config validation asks the registry for the allowed names and the checks of the chosen option's keys, so a new
option is one registered function plus one YAML in `conf/<group>/`: nothing else lists the names.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from . import checks

T = TypeVar("T")
Check = Callable[[str, Any], None]


@dataclass(frozen=True)
class Option(Generic[T]):
    name: str
    value: T
    checks: dict[str, Check] = field(default_factory=dict)


class Options(Generic[T]):
    """`name_key` is the config key that picks an option (schedule.name, data.source, trainer.optimizer); the
    option's own keys are checked under the same node (schedule.warmup_fraction, data.num_images...)."""

    def __init__(self, name_key: str) -> None:
        self.name_key = name_key
        self.node_key = name_key.rpartition(".")[0]
        self._options: dict[str, Option[T]] = {}

    def register(self, name: str, **key_checks: Check) -> Callable[[T], T]:
        """Decorator: register `value` under `name`, with a check for each key the option reads."""

        def add(value: T) -> T:
            self.add(name, value, **key_checks)
            return value

        return add

    def add(self, name: str, value: T, **key_checks: Check) -> None:
        if name in self._options:
            raise ValueError(f"{self.name_key}: option {name!r} is registered twice")
        self._options[name] = Option(name, value, dict(key_checks))

    def names(self) -> tuple[str, ...]:
        return tuple(self._options)

    def get(self, name: str) -> T:
        checks.one_of(self.name_key, name, self.names())
        return self._options[name].value

    def validate(self, cfg: Any) -> None:
        """Check that the whole config `cfg` names a registered option, and each key that option reads."""
        name = checks.select(cfg, self.name_key)
        self.get(name)
        for sub, check in self._options[name].checks.items():
            key = f"{self.node_key}.{sub}" if self.node_key else sub
            check(key, checks.select(cfg, key))
