"""Stand-in for hydra-optuna-sweeper's multi-objective example: Binh and Korn's two objectives, both minimised.

Written for dermsweep's tests from the example's documented behaviour; returns a tuple, as the original does.
"""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="multi-objective-conf", config_name="config")
def binh_and_korn(cfg: DictConfig) -> tuple[float, float]:
    x, y = float(cfg.x), float(cfg.y)
    return 4 * x * x + 4 * y * y, (x - 5) ** 2 + (y - 5) ** 2


if __name__ == "__main__":
    binh_and_korn()
