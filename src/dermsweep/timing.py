"""Batch-1 latency, measured one way everywhere (the sweep's latency objective, export's table, benchmarks)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_latency_ms(call: Callable[[Any], Any], x: Any, runs: int = 20, warmup: int = 3) -> float:
    """Median wall time of `call(x)` in milliseconds over `runs` timed calls after `warmup` untimed ones."""
    for _ in range(warmup):
        call(x)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call(x)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)
