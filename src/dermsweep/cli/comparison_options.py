"""Options shared by the commands that compare runs (promote, runs --paired): one wording, one default."""

from __future__ import annotations

from typing import Any

from ..shipping.defaults import SEED_NOISE


def add_seed_noise(p: Any) -> None:
    """--seed-noise, for every command that compares runs (promote, runs --paired)."""
    defaults = ", ".join(f"{100 * sd:g} for {metric}" for metric, sd in SEED_NOISE.items())
    p.add_argument(
        "--seed-noise",
        type=float,
        metavar="POINTS",
        help="how far one run's score moves with its training seed alone, added to each side of a paired comparison "
        "(points of the metric; 0: resample images only). Default: measured on the experiment's configs trained "
        f"with 2+ seeds (train.py -m seed=1,2,3), else {defaults}",
    )
