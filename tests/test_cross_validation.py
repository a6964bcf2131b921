"""Cross-validation mode (data.split.folds): the lesion-grouped folds, and one real tiny CV recorded as a parent run
with its fold runs, out-of-fold figures and a bagged model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dermsweep.data.split import split
from dermsweep.errors import ConfigError
from dermsweep.evaluation.metrics import scores
from helpers.config import compose, tiny_run


def _table(n_lesions: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for lesion in range(n_lesions):
        label = ["nv", "mel", "bkl", "df"][lesion % 4] if lesion % 3 else "nv"
        for image in range(int(rng.integers(1, 4))):
            rows.append({"image_id": f"img{lesion:04d}_{image}", "label": label, "group": f"les{lesion:04d}"})
    return pd.DataFrame(rows)


def test_folds_partition_train_and_validation_by_lesion_and_leave_test_as_it_is():
    table = _table()
    one_split = split(table, 0.15, 0.15, seed=3)
    folds = [split(table, 0.15, 0.15, seed=3, folds=4, fold=i) for i in range(4)]
    # the test part is the one-split mode's, in every fold
    for f in folds:
        assert sorted(f.test["image_id"]) == sorted(one_split.test["image_id"])
    # every train + validation image is in exactly one fold's validation part, and in the others' training parts
    pool = set(one_split.train["image_id"]) | set(one_split.val["image_id"])
    held_out = [set(f.val["image_id"]) for f in folds]
    assert set().union(*held_out) == pool
    assert sum(len(h) for h in held_out) == len(pool)
    for f in folds:
        assert set(f.train["image_id"]) | set(f.val["image_id"]) == pool
        assert not set(f.train["group"]) & set(f.val["group"])  # no lesion on both sides
        assert not set(f.val["group"]) & set(f.test["group"])
    # stratified: each fold holds about a quarter of each class
    for f in folds:
        share = f.val["label"].value_counts() / pd.concat([f.train, f.val])["label"].value_counts()
        assert share.between(0.15, 0.35).all(), share
    # distinct folds, distinct split ids; the same fold twice, the same id
    assert len({f.split_id for f in folds}) == 4
    assert split(table, 0.15, 0.15, seed=3, folds=4, fold=2).split_id == folds[2].split_id


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        (["data.split.folds=1"], "data.split.folds"),
        (["data.split.fold=0"], "needs data.split.folds"),
        (["data.split.folds=3", "data.split.fold=3"], "data.split.fold"),
        (["resume=abc123"], "resume.*same data.split.folds"),
        (["data.split.folds=3", "data.split.fold=1", "resume=abc123"], "resume.*no data.split.fold"),
    ],
)
def test_fold_settings_are_checked_before_anything_runs(overrides, says):
    from dermsweep.training import config

    cfg = compose(["data=synthetic", "model=mobilenet_v1", *overrides])
    with pytest.raises(ConfigError, match=says):
        config.validate(cfg)


@pytest.mark.parametrize(
    "values, weak",
    [
        ([0.661, 0.743, 0.571, 0.717, 0.708], [2]),  # the recipe's 5-fold CV, seed 2: fold 3 failed to train
        ([0.684, 0.777, 0.776, 0.702, 0.724], []),  # seed 1: a wide but ordinary spread
        ([0.681, 0.523, 0.710], [1]),
        ([0.596, 0.608, 0.572], []),  # two close folds do not make the third weak: its own noise counts
        ([0.575, 0.577, 0.579], []),
    ],
)
def test_a_fold_far_below_the_others_given_the_noise_is_weak(values, weak):
    from dermsweep.training.weak_folds import tag_value, told, weak_folds

    sampling_se = [0.02] * len(values)  # about a real fold's bootstrap standard error
    found = weak_folds(values, sampling_se, "maximize")
    assert [w.fold for w in found] == weak
    if found:  # the tag names folds from 1, and reads back as a sentence
        tag = tag_value([w.fold for w in found])
        assert tag == str(weak[0] + 1) and told(tag).startswith(f"fold {weak[0] + 1} far")
    flipped = [-v for v in values]  # a loss to minimize
    assert [w.fold for w in weak_folds(flipped, sampling_se, "minimize")] == weak
    assert weak_folds(values, [None] * len(values), "maximize") or not weak  # no interval: the spread alone


def test_a_tiny_cross_validation_records_folds_out_of_fold_figures_and_a_bag(tmp_path, monkeypatch, caplog):
    import logging

    import mlflow

    from dermsweep.tracking import run_format as rf
    from dermsweep.tracking.candidates import candidate_runs
    from dermsweep.training import cross_validation, weak_folds
    from dermsweep.training.model import logits_inside
    from dermsweep.training.ship_record import read_view_logits
    from dermsweep.training.task import run

    # a fold far below the other (here made so: the tiny folds are random) is told in the console, the description
    # and a tag, judged against the noise the folds' own bootstrap intervals give
    judged = []

    def second_fold_fails(values, sampling_se, direction):
        judged.append(sampling_se)
        return weak_folds.weak_folds([values[0], values[0] - 0.5], sampling_se, direction)

    monkeypatch.setattr(cross_validation, "weak_folds", second_fold_fails)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    settings = ["model.height=32", "model.width=32", "inference.views=none", "data.split.folds=2"]
    # (kept in the bag: a weak fold trained again is the next test's)
    cfg = compose([*tiny_run(tmp_path, "cv-test"), *settings, "tracking.log_model=always", "retry_weak_folds=0"])
    with caplog.at_level(logging.INFO, logger="dermsweep"):
        value = run(cfg)
    monkeypatch.undo()
    assert "(gains chosen on the other folds)" in caplog.text
    assert "fold 2: val_balanced_accuracy" in caplog.text and "may have failed to train" in caplog.text
    assert "retry_weak_folds=1 trains such a fold again" in caplog.text
    assert all(0 < se < 0.5 for se in judged[0])  # each fold's standard error, from its interval
    assert "in-sample:    balanced accuracy" in caplog.text
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("cv-test")
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags[rf.ROLE] == "cv"]
    folds = sorted((r for r in runs if r.data.tags[rf.ROLE] == "fold"), key=lambda r: r.data.tags[rf.FOLD])
    assert [r.data.tags[rf.FOLD] for r in folds] == ["0", "1"]
    assert all(r.data.tags[rf.PARENT_RUN_ID] == parent.info.run_id for r in folds)
    assert all(r.info.status == "FINISHED" for r in [parent, *folds])
    assert parent.data.tags[rf.WEAK_FOLDS] == "2" and "far below the other folds" in parent.data.tags[rf.DESCRIPTION]

    m = parent.data.metrics
    assert value == pytest.approx(m["final_val/balanced_accuracy"])
    fold_values = [r.data.metrics["final_val/balanced_accuracy"] for r in folds]
    assert m["cv/objective_mean"] == pytest.approx(np.mean(fold_values))
    assert m["cv/objective_se"] == pytest.approx(np.std(fold_values, ddof=1) / np.sqrt(2))
    n_pool = sum(int(r.data.params["data.n_val"]) for r in folds)
    assert m["cv/n_out_of_fold"] == n_pool
    assert {"final_val/balanced_accuracy_lo95", "test/balanced_accuracy_hi95"} <= set(m)
    assert m["final_val/balanced_accuracy_lo95"] <= m["final_val/balanced_accuracy"]
    assert {"operating_point/val_sensitivity_lo95", "cv/in_sample_balanced_accuracy", "cv/in_sample_macro_f1"} <= set(m)

    # out of fold: every train + validation image once, each with its fold model's logits
    logged = read_view_logits(client.download_artifacts(parent.info.run_id, rf.VIEW_LOGITS, str(tmp_path)))
    ids = logged.image_ids["val"]
    assert len(ids) == n_pool == len(set(ids))
    fold_ids = [
        read_view_logits(client.download_artifacts(r.info.run_id, rf.VIEW_LOGITS, str(tmp_path / r.info.run_id)))
        for r in folds
    ]
    assert set(ids) == set(fold_ids[0].image_ids["val"]) | set(fold_ids[1].image_ids["val"])
    # final_val (the objective) is cross-fitted: each fold's rows through the gains chosen on the other fold, which
    # the parent logged; the shipped probabilities the gate pairs are those rows
    assert m["final_val/balanced_accuracy"] == pytest.approx(
        scores(logged.labels["val"], logged.probabilities["val"])["balanced_accuracy"]
    )
    chosen = json.loads(
        Path(client.download_artifacts(parent.info.run_id, rf.CROSS_FITTED_GAINS, str(tmp_path))).read_text()
    )
    assert [c["fold"] for c in chosen] == [0, 1] and all("temperature" in c["inference"] for c in chosen)

    folds_table = pd.read_csv(client.download_artifacts(parent.info.run_id, rf.FOLDS_TABLE, str(tmp_path)))
    assert sorted(folds_table[folds_table["fold"] >= 0]["image_id"]) == sorted(ids)
    assert set(folds_table["fold"]) == {-1, 0, 1}

    # the parent ships both fold models as one bagged model; it is a candidate, its folds are not
    model = mlflow.keras.load_model(f"runs:/{parent.info.run_id}/{rf.MODEL}")
    assert len(logits_inside(model)) == 2
    # its size is the bag's, which the gate's parameter limit reads (a missing count would pass any limit)
    assert int(parent.data.params["model.params"]) == model.count_params() == m["run/params"]
    assert [r.info.run_id for r in candidate_runs(client, [exp.experiment_id])] == [parent.info.run_id]

    # distillation from the bag's out-of-fold predictions: each training image's target is the shipped probability
    # of the fold model that never trained on it, as the CV logged it (no forward pass)
    from dermsweep.data import prepare
    from dermsweep.training import distillation

    def student(*more):
        student_cfg = compose(
            [*tiny_run(tmp_path, "cv-test"), *settings[:3], f"distill.teacher=runs:/{parent.info.run_id}/model", *more]
        )
        student_cfg.distill.teacher_output, student_cfg.distill.temperature = "out_of_fold", 1.0
        h, w = int(student_cfg.model.height), int(student_cfg.model.width)
        split_seed = int(student_cfg.data.split.seed or student_cfg.seed)
        return student_cfg, prepare(student_cfg.data, h, w, split_seed, student_cfg.cache_dir)

    student_cfg, student_data = student("distill.weight=1.0")
    with caplog.at_level(logging.INFO, logger="dermsweep"):
        taught = distillation.teach(student_cfg, student_data, None, client, 16)
    # the bag trained on every image it predicted out of fold: the student's validation images too, and it says so
    n_val = len(student_data.y["val"])
    assert taught.validation_seen == n_val and taught.tags()[rf.TEACHER_SAW_VALIDATION] == f"{n_val} of {n_val}"
    assert f"the teacher trained on {n_val} of this run's {n_val} validation images" in caplog.text
    row = {image_id: i for i, image_id in enumerate(ids)}
    expected = logged.probabilities["val"][[row[i] for i in student_data.split.train["image_id"]]]
    assert np.allclose(taught.targets, expected, atol=1e-5)
    # a student on another split has training images the CV held out as test: refused, with the fix
    with pytest.raises(ConfigError, match="out-of-fold predictions .* not for .* training images.*data.split.seed"):
        distillation.teach(*student("data.split.seed=7"), None, client, 16)

    # export and ensembles check a model on its run's held-out images: a bag has none, and says so
    from dermsweep.errors import DataError
    from dermsweep.shipping.labelled_data import rebuild_run_data

    mlflow.set_tracking_uri(uri)
    with pytest.raises(DataError, match="cross-validation's bag.*--data-dir"):
        rebuild_run_data(parent.info.run_id, 32, 32)

    # Stopped in its second fold, then resumed: the first fold is kept (its weights on disk, under its own name),
    # only the second is trained, the same parent run finishes, and the bag is the one the unstopped CV made.

    real_train, trained_folds = cross_validation.train, []
    stop_at: int | None = None

    def train_until_stopped(fold_cfg, **kwargs):
        trained_folds.append(int(fold_cfg.data.split.fold))
        if stop_at is not None and len(trained_folds) == stop_at:
            raise KeyboardInterrupt
        return real_train(fold_cfg, **kwargs)

    monkeypatch.setattr(cross_validation, "train", train_until_stopped)
    again = [*tiny_run(tmp_path, "cv-resume"), *settings, "tracking.log_model=always", "retry_weak_folds=0"]
    stop_at = 2
    with pytest.raises(KeyboardInterrupt):
        run(compose(again))
    exp2 = client.get_experiment_by_name("cv-resume")
    (stopped,) = [r for r in client.search_runs([exp2.experiment_id]) if r.data.tags[rf.ROLE] == "cv"]
    assert stopped.info.status == "KILLED"
    (first,) = client.search_runs([exp2.experiment_id], "tags.`dermsweep.role` = 'fold'")
    weights = Path(first.data.tags[rf.CHECKPOINT])
    assert weights.name == "fold1of2.weights.h5" and weights.is_file()

    with pytest.raises(ConfigError, match="config differs.*seed: 42 then, 7 now"):
        run(compose([*again, "seed=7", f"resume={stopped.info.run_id}"]))
    stop_at, trained_folds[:] = None, []
    mlflow.set_experiment("cv-test")  # what an earlier run in this process may leave: MLflow's active experiment
    resumed_value = run(compose([*again, f"resume={stopped.info.run_id}"]))
    assert trained_folds == [1]
    resumed = client.get_run(stopped.info.run_id)
    assert resumed.info.status == "FINISHED"
    assert resumed.data.tags[rf.RESUMED_AFTER].startswith("KILLED")
    assert rf.FAILURE_REASON not in resumed.data.tags
    folds2 = client.search_runs([exp2.experiment_id], "tags.`dermsweep.role` = 'fold'")
    assert sorted(r.data.tags[rf.FOLD] for r in folds2) == ["0", "1"]
    assert resumed_value == pytest.approx(value)
    assert sorted(p.step for p in client.get_metric_history(stopped.info.run_id, "cv/fold_objective")) == [0, 1]
    for key in ("cv/objective_mean", "final_val/balanced_accuracy", "test/balanced_accuracy", "test/macro_auc"):
        assert resumed.data.metrics[key] == pytest.approx(m[key], abs=1e-6), key

    # a kept fold is only trusted when its weights still give its logged predictions: changed, damaged or missing
    # weights are taken from the fold run's own copy (a CV resumed on another machine), and without that copy too
    # the fold is trained again
    from dermsweep.training import config as run_config
    from dermsweep.training.cv_resume import restore

    fold0_cfg = compose([*again, "data.split.fold=0"])
    objectives = run_config.objectives(fold0_cfg)
    kept = restore(fold0_cfg, first, objectives)
    assert kept is not None
    kept.classifier.set_weights([w * 1.5 for w in kept.classifier.get_weights()])
    kept.classifier.save_weights(weights)
    assert restore(fold0_cfg, first, objectives) is not None  # from the copy
    weights.write_bytes(b"not an HDF5 file")
    assert restore(fold0_cfg, first, objectives) is not None
    weights.unlink()
    from_copy = restore(fold0_cfg, first, objectives)
    assert from_copy is not None and from_copy.final == kept.final
    import shutil

    copies = Path(first.info.artifact_uri.removeprefix("file://")) / rf.FOLD_WEIGHTS_DIR
    assert [p.name for p in copies.iterdir()] == ["fold1of2.weights.h5"]
    shutil.rmtree(copies)
    assert restore(fold0_cfg, first, objectives) is None
    kept.classifier.save_weights(weights)  # changed weights and no copy
    assert restore(fold0_cfg, first, objectives) is None

    # a finished CV, or one with other settings, is refused before anything runs
    with pytest.raises(ConfigError, match="already finished"):
        run(compose([*again, f"resume={stopped.info.run_id}"]))
    with pytest.raises(ConfigError, match="resume=.*not a cross-validation"):
        run(compose([*again, f"resume={first.info.run_id}"]))


@pytest.mark.slow
def test_a_racing_sweep_of_cross_validation_trials_reports_after_each_fold(tmp_path):
    """`train.py -m` with data.split.folds and the fold-racing pruner: each trial is a CV whose running mean after
    each fold reaches the study (step = fold), marked as fold steps so the sweep's lines say "after fold f of k";
    in MLflow each trial run holds its fold runs."""
    import subprocess
    import sys

    import mlflow
    import optuna

    from dermsweep.sweep import trial_link
    from dermsweep.tracking import run_format as rf
    from helpers.config import REPO

    cmd = [
        sys.executable,
        str(REPO / "train.py"),
        "-m",
        "+sweep=smoke",
        "model.height=32",
        "model.width=32",
        "trainer.finetune.epochs=0",
        "tracking.log_model=false",
        "inference.views=none",
        "data.split.folds=2",
        "hydra.sweeper.n_trials=3",
        "hydra.sweeper.plots=false",
        "hydra.sweeper.pruner._target_=dermsweep.sweep.fold_racing.FoldRacingPruner",
        "+hydra.sweeper.pruner.confidence=0.5",  # prune whenever behind the best on the same fold
        "hydra.sweeper.pruner.n_startup_trials=1",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"hydra.sweeper.storage=sqlite:///{tmp_path}/optuna.db",
        f"hydra.sweep.dir={tmp_path}/multirun",
        f"cache_dir={tmp_path}/cache",
    ]
    env = {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env={**_env(), **env})
    assert done.returncode == 0, done.stderr[-4000:]
    log = done.stdout + done.stderr

    (study_name,) = optuna.get_all_study_names(f"sqlite:///{tmp_path}/optuna.db")
    trials = optuna.load_study(study_name=study_name, storage=f"sqlite:///{tmp_path}/optuna.db").trials
    assert len(trials) == 3
    for t in trials:
        assert t.user_attrs[trial_link.FOLDS_ATTR] == 2
        steps = sorted(t.intermediate_values)
        if t.state == optuna.trial.TrialState.PRUNED:
            assert steps == [0]  # stopped after its first fold: the last fold is never pruned
            assert f"trial {t.number} PRUNED  after fold 1 of 2 (mean so far " in log
        else:
            assert t.state == optuna.trial.TrialState.COMPLETE and steps == [0, 1]

    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    runs = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    trial_runs = [r for r in runs if r.data.tags.get(rf.ROLE) == "trial"]
    assert len(trial_runs) == 3
    for trial_run in trial_runs:
        folds = [r for r in runs if r.data.tags.get(rf.PARENT_RUN_ID) == trial_run.info.run_id]
        assert {r.data.tags[rf.ROLE] for r in folds} == {"fold"} and 1 <= len(folds) <= 2


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith(("DERMSWEEP_", "MLFLOW_"))}
