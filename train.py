"""Train one model (or, with -m, a sweep of them) from the Hydra configs in conf/.

    python train.py data=synthetic trainer=smoke
    python train.py -m +sweep=smoke

All the work happens in dermsweep.task; this file only hands Hydra's composed config over.
"""
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    from dermsweep.errors import DermsweepError  # imported late: `--help` and `--cfg` stay fast
    from dermsweep.task import run

    try:
        return run(cfg)
    except DermsweepError as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records the trial as failed, with this message, and goes on
        print(f"error: {exc}", file=sys.stderr)  # a user mistake: the message, not a traceback
        sys.exit(2)


if __name__ == "__main__":
    main()
