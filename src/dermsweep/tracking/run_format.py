"""The MLflow run format: every tag key, metric name, artifact path and logged-model name dermsweep writes, in one
place for the code that writes runs (training, sweeps, promotion, export) and the code and tests that read them.

Metric names carry a section before "/" so MLflow's charts group them: `train/...` and `val/...` per epoch,
`final_val/...` (the restored best weights on validation), `test/...` (scored once, never used for a choice),
`test_class/...` (per-class test figures), `run/...` (bookkeeping) and `sweep/...` (a sweep's parent run).
Runs recorded before this layout used `_` instead of `/` (`final_val_balanced_accuracy`); readers accept both.
"""

from __future__ import annotations

from collections.abc import Mapping

# ---------------------------------------------------------------- tags
PREFIX = "dermsweep."
ROLE = "dermsweep.role"  # one of ROLES
ROLES = ("single", "trial", "sweep", "multirun", "ensemble", "evaluation")
STATUS = "dermsweep.status"  # running | finished | pruned | failed | killed
FAILURE_REASON = "dermsweep.failure_reason"
OBJECTIVE_METRIC = "dermsweep.objective_metric"  # the config's name, e.g. val_balanced_accuracy
OBJECTIVE_DIRECTION = "dermsweep.objective_direction"
SPLIT_ID = "dermsweep.split_id"
DATASET_ID = "dermsweep.dataset_id"
CHECKPOINT = "dermsweep.checkpoint"
BACKEND = "dermsweep.backend"  # the Keras backend that trained: tensorflow | jax | torch
MODEL_NOTE = "dermsweep.model"  # why a trial logged no model
STUDY_NAME = "dermsweep.study_name"
TRIAL_NUMBER = "dermsweep.trial_number"
SWEEP_DIR = "dermsweep.sweep_dir"
OVERRIDES = "dermsweep.overrides"
OPTUNA_STORAGE = "dermsweep.optuna_storage"
DIRECTIONS = "dermsweep.directions"
N_TRIALS = "dermsweep.n_trials"
BEST_TRIAL_NUMBER = "dermsweep.best_trial_number"
BEST_RUN_ID = "dermsweep.best_run_id"
MEMBERS = "dermsweep.members"  # an ensemble's member run ids, comma-separated
EVALUATED_MODEL = "dermsweep.evaluated_model"  # an evaluation run's model reference
GIT_COMMIT = "mlflow.source.git.commit"
PARENT_RUN_ID = "mlflow.parentRunId"
DESCRIPTION = "mlflow.note.content"  # the run page's description

# Tags of registered model versions (set by promotion) and of logged models.
SOURCE_RUN_ID = "dermsweep.source_run_id"
SWEEP = "dermsweep.sweep"
METRIC = "dermsweep.metric"
METRIC_VALUE = "dermsweep.metric_value"
DIRECTION = "dermsweep.direction"
PROMOTION_REASON = "dermsweep.promotion_reason"
FORCED = "dermsweep.forced"
REPLACED_VERSION = "dermsweep.replaced_version"
PROMOTED_AT = "dermsweep.promoted_at"
KERAS_MODEL = "dermsweep.keras_model"
VERSION_METRIC = "metric."  # + metric name: a version's copy of its run's final metrics

# ---------------------------------------------------------------- logged models and the registry
MODEL = "model"  # the Keras model every run logs
SERVING = "serving"  # the pyfunc wrapper promotion logs beside it
REGISTERED_MODEL = "skin-lesion-classifier"
CHAMPION, PREVIOUS = "champion", "previous"

# ---------------------------------------------------------------- artifacts
CONFIG = "config.yaml"
SPLIT_TABLE = "data/split.csv"
DATA_PROBLEMS = "data/problems.txt"
MODEL_INFO = "model_info.json"
TRAINING_CURVES = "training_curves.png"
EXPORT_DIR = "export"
STUDY_DIR = "study"


def evaluation_artifact(part: str, name: str) -> str:
    """evaluation/<val|test|...>/<name>: classification_report.json, confusion_matrix.json/.png, ..."""
    return f"evaluation/{part}/{name}"


# ---------------------------------------------------------------- metrics
TRAIN, VAL, FINAL_VAL, TEST, TEST_CLASS, RUN, SWEEP_SECTION = (
    "train",
    "val",
    "final_val",
    "test",
    "test_class",
    "run",
    "sweep",
)


def metric(section: str, name: str) -> str:
    return f"{section}/{name}"


def final_metric(objective: str) -> str:
    """The run-level metric an objective is read from: val_macro_f1 -> final_val/macro_f1; params, latency_ms ->
    run/params, run/latency_ms (model cost objectives of multi-objective sweeps)."""
    if objective.startswith("val_"):
        return metric(FINAL_VAL, objective.removeprefix("val_"))
    return metric(RUN, objective)


def canonical(name: str) -> str:
    """Any spelling a person may type for a run-level metric, as it is logged now.

    val_macro_f1, final_val_macro_f1, final_val/macro_f1 -> final_val/macro_f1; test_macro_f1 -> test/macro_f1.
    """
    if "/" in name:
        return name
    for section in (FINAL_VAL, TEST_CLASS, TEST):
        if name.startswith(section + "_"):
            return metric(section, name.removeprefix(section + "_"))
    return final_metric(name)


def legacy(name: str) -> str:
    """The name a metric had in runs recorded before the sections: final_val/macro_f1 -> final_val_macro_f1."""
    return name.replace("/", "_")


def read(metrics: Mapping[str, float], name: str) -> float | None:
    """A run's value of metric `name` (any spelling), from its current or its legacy name."""
    key = canonical(name)
    value = metrics.get(key)
    return value if value is not None else metrics.get(legacy(key))


def is_result(name: str) -> bool:
    """Final validation and test figures (what tables and registered versions show), in either spelling."""
    return name.startswith((FINAL_VAL + "/", FINAL_VAL + "_", TEST + "/", TEST + "_", TEST_CLASS + "/"))


def base_name(name: str) -> str:
    """final_val/macro_f1, test_macro_f1 -> macro_f1: the metric itself, whatever the split."""
    key = canonical(name)
    return key.split("/", 1)[1] if "/" in key else key


def test_twin(name: str) -> str:
    """The test-split figure beside a validation one: final_val/macro_f1 -> test/macro_f1."""
    return metric(TEST, base_name(name))
