"""What "better" means for an objective: one rule for early stopping, sweeps (`improves`) and promotion."""

from __future__ import annotations

import math
from collections.abc import Sequence

DIRECTIONS = ("maximize", "minimize")


def better(candidate: float, incumbent: float, direction: str) -> bool:
    """Strictly better in `direction`; a NaN candidate never is, anything beats a NaN incumbent."""
    if math.isnan(candidate):
        return False
    if math.isnan(incumbent):
        return True
    return candidate > incumbent if direction == "maximize" else candidate < incumbent


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[str]) -> bool:
    """Pareto: `a` is at least as good as `b` in every objective and strictly better in one."""
    signs = [1.0 if d == "maximize" else -1.0 for d in directions]
    sa = [s * v for s, v in zip(signs, a, strict=True)]
    sb = [s * v for s, v in zip(signs, b, strict=True)]
    return all(x >= y for x, y in zip(sa, sb, strict=True)) and any(x > y for x, y in zip(sa, sb, strict=True))
