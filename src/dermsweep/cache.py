"""The process cache: expensive values (a dataset's index, its decoded pixels, its split, backbone weights) kept
in memory so a sweep's later trials in the same process reuse them.

One slot per kind of value and a single entry in each: a sweep varies the model, not the data, so the newest
entry is the one that is asked for again, and memory stays bounded by one dataset. A value is stored only once
it was built without error. `clear()` empties every slot (tests, or a long-lived process that moves on).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

V = TypeVar("V")
_SLOTS: list[ProcessCache] = []


class ProcessCache(Generic[V]):
    def __init__(self, name: str) -> None:
        self.name = name
        self._key: Hashable | None = None
        self._value: V | None = None
        self._lock = threading.Lock()
        _SLOTS.append(self)

    def get(self, key: Hashable, build: Callable[[], V]) -> V:
        """The value for `key`: the cached one, or `build()` (which then replaces the previous entry)."""
        with self._lock:
            if self._key == key and self._value is not None:
                return self._value
        value = build()
        with self._lock:
            self._key, self._value = key, value
        return value

    def peek(self, key: Hashable) -> V | None:
        with self._lock:
            return self._value if self._key == key else None

    def clear(self) -> None:
        with self._lock:
            self._key, self._value = None, None


def clear() -> None:
    for slot in _SLOTS:
        slot.clear()
