"""The plugin's only imports of dermsweep: the sweep package (trial link and job environment, Optuna storages,
MLflow parent runs). The import contracts in pyproject.toml keep it that way."""

from dermsweep.sweep import parent_run, trial_link, trial_owner
from dermsweep.sweep import storage as optuna_storage

__all__ = ["optuna_storage", "parent_run", "trial_link", "trial_owner"]
