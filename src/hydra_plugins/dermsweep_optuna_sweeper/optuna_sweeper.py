"""The Sweeper class Hydra instantiates. Thin on purpose: optuna and mlflow are imported in ``setup`` only, so
Hydra's plugin scan (every ``python train.py ...``) stays fast."""

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hydra.errors import CompactHydraException
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig

from .config import DermsweepOptunaSweeperConf  # noqa: F401  (registers hydra/sweeper: optuna)

EXIT_REFUSED = 2  # a sweep refused before it started exits as a single run's mistake does (train.py), not 1


class DermsweepOptunaSweeper(Sweeper):
    def __init__(self, **kwargs: Any) -> None:
        self._kwargs = kwargs
        self._impl: Any | None = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        from ._impl import OptunaSweeperImpl

        with _refused_in_one_line():
            self._impl = OptunaSweeperImpl(**self._kwargs)
            self._impl.setup(hydra_context=hydra_context, task_function=task_function, config=config)

    def sweep(self, arguments: list[str]) -> Any:
        assert self._impl is not None, "setup() was not called"
        with _refused_in_one_line():
            return self._impl.sweep(arguments)


@contextmanager
def _refused_in_one_line() -> Iterator[None]:
    try:
        yield
    except CompactHydraException as exc:
        # A wrong setting, search space or study storage: one line. Hydra would print it too but exit 1, the
        # code of a crash; SystemExit passes through Hydra. HYDRA_FULL_ERROR=1 still gets the traceback.
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        message = str(exc)
        print(message if message.startswith("error:") else f"error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_REFUSED) from None
