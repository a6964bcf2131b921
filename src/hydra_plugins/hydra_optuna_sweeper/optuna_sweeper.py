"""``hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper``: dermsweep's sweeper under upstream's name.

A subclass rather than a name binding: Hydra instantiates a sweeper only by the module and name it registered the
class under, so the class must live here with this name.
"""

import logging

from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from hydra_plugins.dermsweep_optuna_sweeper.optuna_sweeper import DermsweepOptunaSweeper

log = logging.getLogger(__name__)


class OptunaSweeper(DermsweepOptunaSweeper):
    """Same keys, same behaviour as ``DermsweepOptunaSweeper``; only says at start-up which sweeper runs."""

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        log.info(
            "hydra_plugins.hydra_optuna_sweeper.optuna_sweeper.OptunaSweeper is dermsweep's Optuna sweeper "
            "(alias of hydra_plugins.dermsweep_optuna_sweeper.optuna_sweeper.DermsweepOptunaSweeper)"
        )
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)


__all__ = ["OptunaSweeper"]
