"""shipping.seed_noise: a run's training-seed noise measured where the experiment repeats a config over seeds,
pooled over such configs; else the HAM10000 default for the metric, or the user's figure."""

from __future__ import annotations

import math

import pytest

from dermsweep.shipping.defaults import SEED_NOISE, SEED_NOISE_DOF
from dermsweep.shipping.ranking import RunRow
from dermsweep.shipping.seed_noise import given_noise, measured, seed_noise

METRIC = "final_val/balanced_accuracy"


def row(seed, value, status="finished", split="split-a", **params) -> RunRow:
    recipe = {"model.alpha": "0.75", "model.height": "150", "seed": str(seed), **params}
    if seed is None:
        del recipe["seed"]
    return RunRow(
        f"run-{seed}-{value}", "", status, "single", {METRIC: value}, recipe, {"dermsweep.split_id": split}, 0
    )


def test_noise_is_pooled_over_configs_trained_with_several_seeds():
    rows = [
        row(1, 0.70), row(2, 0.72), row(3, 0.74),  # config A: sd 0.02 (2 dof)
        row(1, 0.60, **{"model.height": "192"}), row(2, 0.64, **{"model.height": "192"}),  # config B: sd 0.028 (1)
        # Not repeats: a config with one seed, the same seed again, another split, an unfinished run, no seed at all,
        # and params that say how a run was started (its name, the machine, the data's path), which are ignored.
        row(1, 0.10, **{"model.alpha": "0.25"}), row(1, 0.99, **{"model.alpha": "0.25"}),
        row(2, 0.30, split="split-b"), row(4, 0.01, status="pruned"), row(None, 0.50),
    ]  # fmt: skip
    rows[1].params.update({"run_name": "again", "hardware.cpu_count": "16", "data.root": "/elsewhere"})
    found = measured(rows, METRIC)
    assert found is not None and found.dof == 3
    assert found.sd == pytest.approx(math.sqrt((0.0008 + 0.0008) / 3))  # squares about each config's mean / dof
    assert "2 configs trained with 2+ seeds here, 5 runs" in found.source
    assert found.describe().startswith("seed noise 2.3 points per run (measured")
    assert measured(rows[5:], METRIC) is None


def test_without_repeats_the_default_stands_in_and_the_users_figure_wins():
    alone = [row(1, 0.70), row(1, 0.60, **{"model.height": "192"})]
    default = seed_noise(alone, METRIC)
    assert (
        default.sd == SEED_NOISE["balanced_accuracy"] and default.dof is None and "HAM10000 default" in default.source
    )
    assert seed_noise(alone, "final_val/loss").sd == 0  # no default: images only, and it says how to measure
    assert "train a config with 2+ seeds" in seed_noise(alone, "final_val/loss").describe()
    repeated = [row(1, 0.70), row(2, 0.74)]  # sd 0.028 on 1 dof, pooled with the default's 0.010 on 8
    pooled = seed_noise(repeated, METRIC)
    assert pooled.dof == 1 + SEED_NOISE_DOF and "pooled with the HAM10000 default's 8 dof" in pooled.source
    assert pooled.sd == pytest.approx(math.sqrt((0.0008 + 8 * 0.010**2) / 9))
    assert seed_noise(repeated, METRIC, given=1.5).sd == pytest.approx(0.015)
    off = seed_noise(repeated, METRIC, given=0)
    assert off.sd == 0 and off.describe() == "no seed noise (--seed-noise 0: images only)"
    for bad in (-1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="points of the metric per run, 0 or more"):
            given_noise(bad)
