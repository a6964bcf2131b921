"""Stand-in for hydra-optuna-sweeper's sphere example (example/sphere.py): x² + y², failing on request.

Written for dermsweep's tests from the example's documented behaviour. Like the original it calls @hydra.main
without version_base, so Hydra runs it with its 1.1 defaults (each job changes into its own output folder).
"""

import hydra
from omegaconf import DictConfig


@hydra.main(config_path="conf", config_name="config")
def sphere(cfg: DictConfig) -> float:
    if cfg.get("error", False):
        raise RuntimeError("cfg.error is True")
    return float(cfg.x) ** 2 + float(cfg.y) ** 2


if __name__ == "__main__":
    sphere()
