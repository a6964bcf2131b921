"""Train one model (or, with -m, a sweep of them) from the Hydra configs in conf/.

    python train.py data=synthetic trainer=smoke
    python train.py -m +sweep=smoke

All the work happens in dermsweep.task; this file only hands Hydra's composed config over.
"""
import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from dermsweep.task import run  # imported late: `--help` and `--cfg` stay fast

    return run(cfg)


if __name__ == "__main__":
    main()
