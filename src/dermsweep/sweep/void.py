"""Void trials: the one owner of the mark that says a trial does not count.

A void trial is one Optuna shows as FAIL that the sweep leaves out of its n_trials count, its statistics and its
sweep time: asked beyond n_trials ("surplus"), cut short by Ctrl-C ("interrupted"), a second copy of a warm-start
configuration ("duplicate"), left behind by a worker whose heartbeat went stale ("stale") or whose process died
("killed"), or asked by a worker that died before it could claim it ("unclaimed"). The mark is a study user attr
``dermsweep.void.<trial number>`` holding the reason, so every worker and every later sweep of the study reads it.
"""

from __future__ import annotations

from typing import Any

PREFIX = "dermsweep.void."
SURPLUS, INTERRUPTED, DUPLICATE, STALE, KILLED, UNCLAIMED = (
    "surplus",
    "interrupted",
    "duplicate",
    "stale",
    "killed",
    "unclaimed",
)


def mark(study: Any, number: int, reason: str) -> None:
    """Mark trial ``number`` of ``study`` void, for ``reason``."""
    study.set_user_attr(f"{PREFIX}{int(number)}", reason)


def reasons(study: Any) -> dict[int, str]:
    """{trial number: reason} of the study's void trials."""
    return {int(k[len(PREFIX) :]): str(v) for k, v in study.user_attrs.items() if k.startswith(PREFIX)}


def numbers(study: Any) -> set[int]:
    """The numbers of the study's void trials."""
    return set(reasons(study))
