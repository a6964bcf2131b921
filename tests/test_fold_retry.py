"""A cross-validation's weak fold (training/weak_folds.py) trained again with another seed on the same split
(retry_weak_folds), and a CV stopped in or after that retry resumed to the same bag. Its own file so that it runs
beside the other tiny cross-validation (tests/test_cross_validation.py) on the second test worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.config import compose, tiny_run


@pytest.mark.slow
def test_a_weak_fold_is_trained_again_with_another_seed_on_the_same_split_and_resumes_alike(
    tmp_path, monkeypatch, caplog
):
    import logging

    import mlflow

    from dermsweep.tracking import run_format as rf
    from dermsweep.training import cross_validation, weak_folds
    from dermsweep.training.model import logits_inside
    from dermsweep.training.task import run

    # fold 2's first model is judged weak (the tiny folds are random: made so), its retry is not
    def first_model_of_fold_2_fails(values, sampling_se, direction):
        judged.append(list(values))
        if len(judged) > 1:
            return []
        return weak_folds.weak_folds([values[0], values[0] - 0.5], sampling_se, direction)

    trained_folds: list[tuple[int, int]] = []
    real_train = cross_validation.train

    def train_and_count(fold_cfg, **kwargs):
        trained_folds.append((int(fold_cfg.data.split.fold), int(fold_cfg.seed)))
        return real_train(fold_cfg, **kwargs)

    monkeypatch.setattr(cross_validation, "weak_folds", first_model_of_fold_2_fails)
    monkeypatch.setattr(cross_validation, "train", train_and_count)
    settings = [
        *["model.height=32", "model.width=32", "inference.views=none", "data.split.folds=2", "seed=5"],
        "tracking.log_model=always",
    ]
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    judged: list[list[float]] = []
    with caplog.at_level(logging.INFO, logger="dermsweep"):
        value = run(compose([*tiny_run(tmp_path, "cv-retry"), *settings]))
    assert trained_folds == [(0, 5), (1, 5), (1, 1005)]  # the same split (seed 5), another seed for fold 2's model
    assert "training it again with seed 1005 (retry 1 of 1)" in caplog.text
    client = mlflow.MlflowClient(uri)
    exp = client.get_experiment_by_name("cv-retry")
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])
    (parent,) = [r for r in runs if r.data.tags[rf.ROLE] == "cv"]
    first, weak, retry = [r for r in runs if r.data.tags[rf.ROLE] == "fold"]
    assert [r.data.tags[rf.FOLD] for r in (first, weak, retry)] == ["0", "1", "1"]
    assert weak.data.tags[rf.REPLACED_BY] == retry.info.run_id and rf.REPLACED_BY not in first.data.tags
    assert retry.data.tags[rf.FOLD_ATTEMPT] == "1" and retry.info.run_name.endswith("-fold2of2-retry1")
    assert retry.data.params["seed"] == "1005" and retry.data.params["data.split.seed"] == "5"
    assert retry.data.tags[rf.SPLIT_ID] == weak.data.tags[rf.SPLIT_ID]
    assert Path(retry.data.tags[rf.CHECKPOINT]).name == "fold2of2-retry1.weights.h5"
    assert Path(weak.data.tags[rf.CHECKPOINT]).is_file()  # the weak model's weights are not overwritten
    # the bag holds fold 1 and fold 2's retry; the parent says what was trained again, and no fold is weak now
    tags, m = parent.data.tags, parent.data.metrics
    assert tags[rf.RETRIED_FOLDS] == "2" and rf.WEAK_FOLDS not in tags
    assert "fold 2 trained again with seed 1005" in tags[rf.DESCRIPTION]
    values = [r.data.metrics["final_val/balanced_accuracy"] for r in (first, retry)]
    assert judged[1] == pytest.approx(values)
    assert m["cv/objective_mean"] == pytest.approx(np.mean(values))
    model = mlflow.keras.load_model(f"runs:/{parent.info.run_id}/{rf.MODEL}")
    assert len(logits_inside(model)) == 2

    # stopped just after its retry (marked as a stop leaves it), then resumed: the retry is fold 2's model, kept and
    # not trained once more; stopped during the retry (its run deleted, as if it never finished): the weak fold is
    # trained again alike. Either way the same run finishes with the unstopped CV's figures.
    for when, left_to_train in (("after", []), ("in", [(1, 1005)])):
        if when == "in":
            client.delete_run(retry.info.run_id)
        client.set_terminated(parent.info.run_id, "KILLED")
        trained_folds[:], judged[:] = [], []
        assert run(compose([*tiny_run(tmp_path, "cv-retry"), *settings, f"resume={parent.info.run_id}"])) == (
            pytest.approx(value)
        )
        assert trained_folds == left_to_train, when
        resumed = client.get_run(parent.info.run_id)
        assert resumed.info.status == "FINISHED" and resumed.data.tags[rf.RETRIED_FOLDS] == "2"
        assert "fold 2 trained again with seed 1005" in resumed.data.tags[rf.DESCRIPTION]
        for key in ("cv/objective_mean", "final_val/balanced_accuracy", "test/balanced_accuracy"):
            assert resumed.data.metrics[key] == pytest.approx(m[key], abs=1e-6), (when, key)
