"""How far a run's validation score moves when only its training seed changes: the noise a paired image bootstrap
cannot see, and that the gate and `dermsweep runs --paired` add to it.

Two runs of one config on one split, seeds 1 and 3, differed by +2.3 points [+0.6, +4.1] in the paired image
bootstrap (P 0.995): the images were the same, the training was not. So the comparison needs the size of that noise.
It is measured where the experiment holds it: finished runs that share a split and every hyperparameter but `seed`
(e.g. `train.py -m seed=1,2,3`), pooled over such groups and with the default measured on HAM10000 (weighted by
degrees of freedom: few repeats lean on it, many outweigh it). Without repeats the default stands in (the owner of
those figures is shipping.defaults), and the user can give their own or 0 (images only).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ..tracking import run_format as rf
from .defaults import SEED_NOISE, SEED_NOISE_DOF
from .ranking import NOT_HYPERPARAMETERS, RunRow, RunsTable, collect_runs

# Params that say how a run was started, not what it trained: two seeds of one config may differ in them.
NOT_THE_RECIPE = (*NOT_HYPERPARAMETERS, "resume", "trainer.verbose", "data.root")
SEED_PARAM = "seed"


@dataclass(frozen=True)
class SeedNoise:
    """One run's training-seed standard deviation of a metric (metric units), and where the figure comes from."""

    sd: float
    dof: int | None  # from repeated seeds: the pooled degrees of freedom; None: a default or the user's figure
    source: str

    def describe(self) -> str:
        """'seed noise 1.0 points per run (measured: ...)' or 'no seed noise (...)'."""
        if self.sd == 0:
            return f"no seed noise ({self.source})"
        return f"seed noise {100 * self.sd:.1f} points per run ({self.source})"

    def to_json(self) -> dict:
        return {"sd": self.sd, "dof": self.dof, "source": self.source, "describe": self.describe()}


def recipe_key(row: RunRow) -> tuple | None:
    """What a run trained, less its seed: equal for two seeds of one config on one split (None: not a seeded run)."""
    if SEED_PARAM not in row.params:
        return None
    params = {k: v for k, v in row.params.items() if k != SEED_PARAM and not k.startswith(NOT_THE_RECIPE)}
    return (row.split_id, tuple(sorted(params.items())))


def measured(rows: Iterable[RunRow], metric: str) -> SeedNoise | None:
    """The pooled within-config standard deviation of `metric` over configs run with 2+ seeds (None: no repeats).
    Only finished runs count; one seed run twice is one value (its repeat adds no seed noise)."""
    groups: dict[tuple, dict[str, float]] = {}
    for row in rows:
        value, key = row.metric(metric), recipe_key(row)
        if row.status == "finished" and value is not None and key is not None:
            groups.setdefault(key, {})[row.params[SEED_PARAM]] = value
    repeated = [list(by_seed.values()) for by_seed in groups.values() if len(by_seed) > 1]
    dof = sum(len(values) - 1 for values in repeated)
    if dof == 0:
        return None
    squares = sum(sum((v - sum(values) / len(values)) ** 2 for v in values) for values in repeated)
    runs = sum(len(values) for values in repeated)
    configs = f"{len(repeated)} config{'s' if len(repeated) > 1 else ''}"
    return SeedNoise(math.sqrt(squares / dof), dof, f"measured: {configs} trained with 2+ seeds here, {runs} runs")


def for_table(client, table: RunsTable, given: float | None = None) -> SeedNoise:
    """The seed noise to compare `table`'s runs with, measured on their whole experiment: a sweep rarely repeats a
    seed, the experiment around it may."""
    rows = table.rows
    if table.sweep and given_noise(given) is None:
        rows = collect_runs(client, table.experiment, None, table.metric, finished_only=True).rows
    return seed_noise(rows, table.metric, given)


def given_noise(points: float | None) -> float | None:
    """The user's figure (points of the metric per run; 0: images only; None: measure), or ValueError saying why not."""
    if points is not None and not (math.isfinite(points) and points >= 0):
        raise ValueError(f"--seed-noise {points}: points of the metric per run, 0 or more (0: images only)")
    return points


def seed_noise(rows: Iterable[RunRow], metric: str, given: float | None = None) -> SeedNoise:
    """The seed noise to compare runs with: `given` (points; 0 turns it off), else measured on `rows`, else the
    default for the metric (none for a metric without one)."""
    points = given_noise(given)
    if points is not None:
        return SeedNoise(points / 100, None, "--seed-noise" if points else "--seed-noise 0: images only")
    found = measured(rows, metric)
    base = rf.base_name(metric)
    if found is not None and base in SEED_NOISE and found.dof is not None:
        # Three seeds give 2 dof, and Student's t on 2 dof is wider than any real seed noise: the default is an
        # estimate too, so both are pooled by their dof (many repeats here outweigh it).
        dof = found.dof + SEED_NOISE_DOF
        sd = math.sqrt((found.dof * found.sd**2 + SEED_NOISE_DOF * SEED_NOISE[base] ** 2) / dof)
        return SeedNoise(sd, dof, f"{found.source}, pooled with the HAM10000 default's {SEED_NOISE_DOF} dof")
    if found is not None:
        return found
    if base in SEED_NOISE:
        return SeedNoise(
            SEED_NOISE[base], None, "the HAM10000 default: no config here was trained with 2+ seeds to measure it"
        )
    return SeedNoise(0.0, None, f"none known for {base}: train a config with 2+ seeds, or give --seed-noise")
