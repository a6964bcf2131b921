"""Stand-in for hydra-optuna-sweeper's custom search space example: a 4-d sphere where z depends on the sampled x
and w is a new key, both defined by run in ``configure`` (named in the config by this file's hyphenated name).

Written for dermsweep's tests from the example's documented behaviour.
"""

import hydra
from omegaconf import DictConfig
from optuna.trial import Trial


@hydra.main(config_path="custom-search-space", config_name="config")
def four_d_sphere(cfg: DictConfig) -> float:
    return sum(float(cfg[k]) ** 2 for k in ("w", "x", "y", "z"))


def configure(cfg: DictConfig, trial: Trial) -> None:
    """z within max_z_difference_from_x of x; "+w" because w is not in the config (an append override)."""
    x = trial.params["x"]
    d = cfg.max_z_difference_from_x
    trial.suggest_float("z", x - d, x + d)
    trial.suggest_float("+w", 0.0, 1.0)


if __name__ == "__main__":
    four_d_sphere()
