"""The plugin's only imports of dermsweep: the sweep package (trial link and job environment, Optuna storages and
private API, void trials, MLflow parent runs and warm-start runs). The import contracts in pyproject.toml keep it
that way."""

from dermsweep.sweep import optuna_private, parent_run, study_report, trial_link, trial_owner, void, warm_start_runs
from dermsweep.sweep import storage as optuna_storage

__all__ = [
    "optuna_private",
    "optuna_storage",
    "parent_run",
    "study_report",
    "trial_link",
    "trial_owner",
    "void",
    "warm_start_runs",
]
