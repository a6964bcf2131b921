"""The Sweeper class Hydra instantiates. Thin on purpose: optuna and mlflow are imported in ``setup`` only, so
Hydra's plugin scan (every ``python train.py ...``) stays fast."""

from typing import Any

from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import DermsweepOptunaSweeperConf  # noqa: F401  (registers hydra/sweeper: optuna)


class DermsweepOptunaSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._impl: Any | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from ._impl import OptunaSweeperImpl

        self._impl = OptunaSweeperImpl(**self._kwargs)
        self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        assert self._impl is not None, "setup() was not called"
        return self._impl.sweep(arguments)
