"""The MLflow run format: every tag key, metric name, artifact path and logged-model name dermsweep writes, in one
place for the code that writes runs (training, sweeps, promotion, export) and the code and tests that read them.

Metric names carry a section before "/" so MLflow's charts group them: `epoch/...` the learning curves (training
and validation per epoch), `final_val/...` (the restored best weights on validation), `test/...` (scored once, never
used for a choice), `test_class/...` (per-class test figures), `gains/...` (the evaluation-time steps and their
calibration), `operating_point/...`, `run/...` (bookkeeping), `sweep/...` (a sweep's parent run), and `eval/...` /
`eval_class/...` (an evaluation run: a shipped model scored on a labelled set, `dermsweep evaluate`). MLflow's run
charts page lists sections alphabetically, so the learning curves open it, before the single-value figures.
Runs recorded before this layout used `_` instead of `/` (`final_val_balanced_accuracy`); readers accept both. Runs
recorded before 2026-12-05 keep their curves under `train/` and `val/` and calibration under `calibration/`.
"""

from __future__ import annotations

from collections.abc import Mapping

# ---------------------------------------------------------------- tags
PREFIX = "dermsweep."
ROLE = "dermsweep.role"  # one of ROLES
ROLES = ("single", "trial", "sweep", "multirun", "ensemble", "evaluation", "cv", "fold")
STATUS = "dermsweep.status"  # running | finished | pruned | failed | killed
FAILURE_REASON = "dermsweep.failure_reason"
OBJECTIVE_METRIC = "dermsweep.objective_metric"  # the config's name, e.g. val_balanced_accuracy
OBJECTIVE_DIRECTION = "dermsweep.objective_direction"
SPLIT_ID = "dermsweep.split_id"
DATASET_ID = "dermsweep.dataset_id"
# Bookkeeping kept out of sight: the MLflow UI lists no `mlflow.`-prefixed tag (it treats them as system tags).
CHECKPOINT = "mlflow.dermsweep.checkpoint"  # this machine's path of the best weights (was dermsweep.checkpoint)
BACKEND = "dermsweep.backend"  # the Keras backend that trained: tensorflow | jax | torch
MODEL_NOTE = "dermsweep.model"  # why a trial logged no model
# + ".<host>.<pid>": one per process running the run (a sweep's parent has one per worker), a JSON owner record of
# dermsweep.liveness refreshed by a heartbeat; a RUNNING run whose owners are all dead is reaped (tracking.run_owner)
OWNER = "mlflow.dermsweep.owner"  # hidden in the UI (host, machine id, pid are no one's reading)
LEGACY_OWNER = "dermsweep.owner"  # the same, in runs recorded before it was hidden
STUDY_NAME = "dermsweep.study_name"
TRIAL_NUMBER = "dermsweep.trial_number"
SWEEP_DIR = "dermsweep.sweep_dir"
OVERRIDES = "dermsweep.overrides"
OPTUNA_STORAGE = "dermsweep.optuna_storage"
DIRECTIONS = "dermsweep.directions"
N_TRIALS = "dermsweep.n_trials"
TIMEOUT = "dermsweep.timeout"  # an Optuna sweep's time budget (sweep time), e.g. "3h00m00s"; "none"
BEST_TRIAL_NUMBER = "dermsweep.best_trial_number"
BEST_RUN_ID = "dermsweep.best_run_id"
STOP_REASON = "dermsweep.stop_reason"  # why an Optuna sweep stopped launching trials (n_trials, timeout, ...)
WARM_START = "dermsweep.warm_start"  # a trial's user attr: where its enqueued configuration came from
CV_FOLDS = "dermsweep.cv_folds"  # a cross-validation's number of folds (on its parent run)
FOLD = "dermsweep.fold"  # a fold run's index, 0..folds-1
WEAK_FOLDS = "dermsweep.weak_folds"  # a CV's folds far below the others (weak_folds.py), 1-based: "3" or "2,4"
RETRIED_FOLDS = "dermsweep.retried_folds"  # a CV's folds trained again because their model was weak, 1-based
FOLD_ATTEMPT = "dermsweep.fold_attempt"  # a fold run that trains its fold again (retry_weak_folds): 1, 2, ...
REPLACED_BY = "dermsweep.replaced_by"  # a weak fold run: the run of its retry, which its CV's bag holds instead
RESUMED_AFTER = "dermsweep.resumed_after"  # a resumed cross-validation: how it had ended before ("KILLED: ...")
RESUMED_COMMITS = "dermsweep.resumed_commits"  # ... and, when the code changed, which commit trained which folds
MEMBERS = "dermsweep.members"  # an ensemble's member run ids, comma-separated
TEACHER = "dermsweep.teacher"  # a distilled run's teacher, as a person reads it ("skin-lesion-classifier v3 (run ..)")
# "N of M": a distilled run's validation images its teacher trained on (its validation figures lean optimistic)
TEACHER_SAW_VALIDATION = "dermsweep.teacher_saw_validation"
EVALUATED_MODEL = "dermsweep.evaluated_model"  # an evaluation run's model reference
# An evaluation run's other tags: which model version and training run it scored, which data, which decision.
EVALUATED_MODEL_NAME = "dermsweep.evaluated_model_name"  # registered name (registry references only)
EVALUATED_VERSION = "dermsweep.evaluated_version"  # registered version (registry references only)
EVALUATED_RUN_ID = "dermsweep.evaluated_run_id"  # the run that trained the model
EVALUATED_MODEL_ID = "dermsweep.evaluated_model_id"  # its LoggedModel id
EVAL_DATA_PATH = "dermsweep.eval_data_path"
EVAL_DATA_LAYOUT = "dermsweep.eval_data_layout"  # ham10000 | isic2018 | folder
EVAL_DECISION = "dermsweep.eval_decision"  # operating_point | argmax: how mel sensitivity/specificity were read
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
FOLDS_TABLE = "data/folds.csv"  # a cross-validation's parent: image_id, label, group, fold (test: -1)
DATA_PROBLEMS = "data/problems.txt"
MODEL_INFO = "model_info.json"
MODEL_CARD = "model_card.md"  # written by promotion: what the promoted model is, its scores, its limits
TRAINING_CURVES = "training_curves.png"
GAINS_REPORT = "evaluation/gains.json"
# a cross-validation's parent: each fold's gains chosen on the other folds (what scored its out-of-fold rows)
CROSS_FITTED_GAINS = "evaluation/cross_fitted_gains.json"
VIEW_LOGITS = "evaluation/view_logits.npz"  # each test-time view's logits on validation and test (for ensembles)
FOLD_WEIGHTS_DIR = "checkpoints"  # a fold run's shipped weights (fold<i>of<k>.weights.h5), for resuming its CV
# Files under evaluation_artifact(part, ...); an evaluation run writes them under part EVAL.
CLASSIFICATION_REPORT = "classification_report.json"
CONFUSION_JSON = "confusion_matrix.json"
CONFUSION_PNG = "confusion_matrix.png"
RELIABILITY_JSON = "reliability.json"
RELIABILITY_PNG = "reliability.png"
EVALUATION_REPORT = "report.json"  # an evaluation run's whole report (what `dermsweep evaluate --json` prints)
EXPORT_DIR = "export"
STUDY_DIR = "study"
TIME_TO_QUALITY_FIGURE = "study/time_to_quality.png"  # a sweep's best-so-far objective against sweep minutes
TIME_TO_QUALITY_TABLE = "study/time_to_quality.csv"  # its data, one row per trial


def evaluation_artifact(part: str, name: str) -> str:
    """evaluation/<val|test|eval>/<name>: classification_report.json, confusion_matrix.json/.png, ..."""
    return f"evaluation/{part}/{name}"


# ---------------------------------------------------------------- metrics
EPOCH = "epoch"  # per epoch (step = epoch): train_loss, train_accuracy, lr, val_balanced_accuracy ... (epoch_metric)
FINAL_VAL = "final_val"  # the shipped model on validation: what runs are ranked and promoted by
TEST = "test"  # the shipped model on test: scored once, only reported
TEST_CLASS = "test_class"  # per-class test precision / recall / f1
RUN = "run"  # bookkeeping: best epoch, seconds, frozen layers, model cost objectives
SWEEP_SECTION = "sweep"  # a sweep's parent run
GAINS = "gains"  # the shipped model's evaluation-time steps, each on its own (plain, views, adjusted)
# The calibration steps' settings and effect (gains/temperature, gains/prior_tau, gains/ece_val_before ...) are in
# GAINS; runs recorded before 2026-12-05 have them under this section.
LEGACY_CALIBRATION = "calibration"
OPERATING_POINT = "operating_point"  # the decision threshold and its sensitivity / specificity
# A cross-validation's parent: cv/objective_mean and _se over folds, cv/fold_objective (step = fold). Its final_val/
# figures are out of fold (each image scored by the fold model that never trained on it); test/ scores the bag.
CV = "cv"
# An evaluation run's sections: eval/balanced_accuracy, eval/ece, eval/mel_sensitivity, eval_class/recall_mel ...
EVAL, EVAL_CLASS = "eval", "eval_class"


def metric(section: str, name: str) -> str:
    return f"{section}/{name}"


def epoch_metric(key: str) -> str:
    """One epoch's figure (a Keras history key, plus the trainer's own) under its MLflow name: val_x -> epoch/val_x,
    lr -> epoch/lr, epoch_seconds -> epoch/train_seconds, any other x -> epoch/train_x."""
    if key.startswith("val_") or key == "lr":
        return metric(EPOCH, key)
    return metric(EPOCH, "train_" + key.removeprefix("epoch_"))


# A sweep's parent run, besides its counts (sweep/best_value, n_complete, ... with step = trials finished):
# the best first objective so far with step = seconds of sweep time (MLflow's chart then plots time to quality),
# and the sweep time in minutes with step = trials finished.
BEST_VALUE_BY_SECOND = metric(SWEEP_SECTION, "best_value_by_second")
ELAPSED_MINUTES = metric(SWEEP_SECTION, "elapsed_minutes")


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


def earlier_names(key: str) -> list[str]:
    """The names a current metric had in older runs: the `_` spelling, and calibration/x for the calibration
    figures now in gains/ (gains/temperature, gains/prior_tau, gains/ece_*)."""
    names = [legacy(key)]
    section, _, name = key.partition("/")
    if section == GAINS and (name.startswith("ece_") or name in ("temperature", "prior_tau")):
        names.append(metric(LEGACY_CALIBRATION, name))
    return names


def read(metrics: Mapping[str, float], name: str) -> float | None:
    """A run's value of metric `name` (any spelling), from its current name or any it had in older runs."""
    key = canonical(name)
    for candidate in (key, *earlier_names(key)):
        value = metrics.get(candidate)
        if value is not None:
            return value
    return None


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


# ---------------------------------------------------------------- candidates
# Which runs are candidates (ranked by `dermsweep runs`, promoted, warm-started from): the runs that trained or
# combined a model. A sweep's or grid multirun's parent run and an evaluation run are not, whatever metrics they
# carry; a run without a role tag (recorded by another tool) is. tracking.candidates applies it to searches.
NOT_CANDIDATE_ROLES = ("sweep", "multirun", "evaluation", "fold")  # a fold is a part of its cross-validation


def is_cross_validation(tags: Mapping[str, str]) -> bool:
    """Is a run with these tags a cross-validation's parent (its own, or a sweep's trial): a bag of fold models whose
    validation figures are out of fold?"""
    return CV_FOLDS in tags and FOLD not in tags


def is_candidate(tags: Mapping[str, str]) -> bool:
    """Is a run with these tags a candidate (see NOT_CANDIDATE_ROLES)?"""
    return tags.get(ROLE) not in NOT_CANDIDATE_ROLES
