"""Runs dermsweep's train.py (its arguments as given) where TensorFlow cannot be imported, as on a GPU box without it.

    python tests/helpers/backend_runner.py data=synthetic trainer=smoke hardware.backend=jax ...

Any import of tensorflow fails as if it were not installed, so a JAX or PyTorch run proves it needs none. Also a
pruner for the backend sweep tests: every trial after the first `n_startup_trials` is pruned at its first report,
so a short sweep prunes for certain (Optuna's own pruners compare values, which tiny trials leave to chance); a
sweep names it `helpers.backend_runner.PruneAfterStartup` (helpers.backends.PRUNE_AFTER_STARTUP).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from pathlib import Path

import optuna


class _NoTensorFlow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            # A spec without a loader: importlib.util.find_spec says nothing is there (no origin), `import` fails.
            return importlib.machinery.ModuleSpec(name, None)
        return None


class PruneAfterStartup(optuna.pruners.BasePruner):
    def __init__(self, n_startup_trials: int = 2, n_warmup_steps: int = 0):
        self.n_startup_trials = n_startup_trials

    def prune(self, study, trial) -> bool:
        return trial.number >= self.n_startup_trials


if __name__ == "__main__":
    # tests/ in place of this script's folder: the pruner is found as helpers.backend_runner, and the helpers'
    # module names (config, models, ...) shadow nothing train.py imports.
    sys.path[0] = str(Path(__file__).resolve().parents[1])
    sys.meta_path.insert(0, _NoTensorFlow())
    sys.argv = ["train.py", *sys.argv[1:]]
    from dermsweep.train import main

    main()
