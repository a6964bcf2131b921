"""Ensembles: members chosen on validation (greedy until the noise, or top-k), one shipped model averaging their
logits, logged as a run of its own that goes through the promotion gate like any run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dermsweep.evaluation.metrics import scores
from dermsweep.shipping import ensemble as ens
from dermsweep.shipping.ranking import NoEligibleRun, RunRow
from dermsweep.tracking import run_format as rf
from dermsweep.training.ship_record import LoggedViews
from helpers.config import SMALLEST, compose


def _candidate(name: str, value: float) -> ens.Candidate:
    row = RunRow(name, name, "finished", "trial", {}, {}, {}, 0)
    return ens.Candidate(row, {}, {}, value, {}, LoggedViews({}, {}))


def test_members_can_be_chosen_among_named_runs_only():
    rows = [RunRow(i, i, "finished", "cv", {}, {}, {}, 0) for i in ("aa11", "ab22", "bb33")]
    assert [r.run_id for r in ens._named(rows, ["bb", "aa1"])] == ["aa11", "bb33"]  # in rank order
    with pytest.raises(ens.EnsembleError, match="--runs a: 2 runs"):
        ens._named(rows, ["a"])
    with pytest.raises(ens.EnsembleError, match="--runs cc: no finished candidate run"):
        ens._named(rows, ["cc"])


def test_greedy_selection_stops_when_the_next_member_does_not_improve_beyond_the_noise():
    from helpers.predictions import probs_of, real_shaped

    a, b, c = _candidate("a", 0.70), _candidate("b", 0.68), _candidate("c", 0.60)
    y, lesions, look, rng = real_shaped()
    alone = probs_of(y, lesions, look, rng, 1.5)

    def nudged(probs):
        """In every class one wrong decision put right and one right decision made wrong, plus one more nevus put
        right: better on these images by a hair, and within the noise (the changes go both ways)."""
        out, pred = probs.copy(), probs.argmax(axis=1)
        fixes = [np.flatnonzero((y == k) & (pred != k))[:1] for k in range(probs.shape[1])]
        fixes.append(np.flatnonzero((y == 5) & (pred != 5))[1:2])
        for i in np.concatenate(fixes):
            out[i] = np.eye(probs.shape[1])[y[i]] * 0.9 + 0.1 / probs.shape[1]
        for k in range(probs.shape[1]):
            for i in np.flatnonzero((y == k) & (pred == k))[:1]:
                out[i] = np.eye(probs.shape[1])[(k + 1) % probs.shape[1]] * 0.9 + 0.1 / probs.shape[1]
        return out

    with_b = probs_of(y, lesions, look, np.random.default_rng(7), 3.0)  # clearly better than a alone
    table = {("a",): alone, ("a", "b"): with_b, ("a", "c"): nudged(alone), ("a", "b", "c"): nudged(with_b)}
    for noisy, base in ((("a", "c"), ("a",)), (("a", "b", "c"), ("a", "b"))):  # only the bootstrap tells them apart
        assert scores(y, table[noisy])["balanced_accuracy"] > scores(y, table[base])["balanced_accuracy"]

    def probabilities_of(members):
        return table[tuple(sorted(m.row.name for m in members))]

    def select(pool, size=5, method="greedy"):
        return ens._select(pool, size, method, probabilities_of, y, "balanced_accuracy", lesions, 0.9, lambda m: None)

    chosen = select([a, b, c])
    assert [m.row.name for m in chosen.members] == ["a", "b"]  # each run once; c adds only noise
    assert [t["run"] for t in chosen.trace] == ["a", "b", "c"] and chosen.trace[-1]["added"] is False
    assert chosen.trace[1]["p_better"] >= 0.9 and chosen.trace[2]["p_better"] < 0.9
    assert [m.row.name for m in select([a, b, c], 2, "top").members] == ["a", "b"]
    with pytest.raises(ens.EnsembleError, match="no second run improves .* beyond the noise"):
        select([a, c])


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """Two real smoke training runs (synthetic data, different seeds) in a private store, models logged."""
    import mlflow

    from dermsweep.tracking.store import connect
    from dermsweep.training.task import run

    store = tmp_path_factory.mktemp("ensemble_store")
    uri = f"sqlite:///{store}/mlflow.db"
    for seed in (1, 2):
        run(
            compose(
                [
                    *SMALLEST,
                    f"tracking.uri={uri}",
                    "experiment=ens",
                    f"seed={seed}",
                    "data.split.seed=42",
                    "tracking.log_model=always",
                    f"cache_dir={store}/cache",
                    "inference.views=flips",
                ]
            )
        )
    client = connect(uri, create=False)
    yield client
    mlflow.set_tracking_uri(None)


@pytest.mark.slow
def test_ensemble_run_is_logged_like_a_run_and_faces_the_gate(two_runs, tmp_path):
    from dermsweep.shipping.promotion import promote
    from dermsweep.tracking.model_ref import load

    client = two_runs
    built = ens.build(client, "ens", size=2, method="top", candidates=5)
    assert len(built.members) == 2 and built.run_id
    run = client.get_run(built.run_id)
    tags, metrics = run.data.tags, run.data.metrics
    assert tags[rf.ROLE] == "ensemble" and tags[rf.STATUS] == "finished"
    assert any(k.startswith(rf.OWNER + ".") for k in tags)  # claimed by its process: reapable if it is killed
    assert sorted(tags[rf.MEMBERS].split(",")) == sorted(built.member_ids())
    for name in ("balanced_accuracy", "macro_f1", "macro_auc"):
        assert rf.metric(rf.FINAL_VAL, name) in metrics and rf.metric(rf.TEST, name) in metrics
    assert metrics[rf.metric(rf.RUN, "params")] == built.params > 0
    assert metrics[rf.metric(rf.FINAL_VAL, "balanced_accuracy")] == pytest.approx(built.values["val"])
    # The logged model is the shipped ensemble: raw pixels in, probabilities out, both members inside.
    model, ref = load(f"runs:/{built.run_id}/{rf.MODEL}", client)
    x = np.full((2, *ref.input_size, 3), 128, np.float32)
    probs = np.asarray(model.predict_on_batch(x))
    assert probs.shape == (2, 7) and np.allclose(probs.sum(1), 1, atol=1e-5)
    assert len([layer for layer in model.layers if layer.name.startswith("member_")]) == 2
    # export and evaluate rebuild its data from its members (an ensemble trained nothing and has no config)
    from dermsweep.shipping.labelled_data import rebuild_run_data

    prepared, notes = rebuild_run_data(built.run_id, *ref.input_size)
    assert prepared.split.split_id == tags[rf.SPLIT_ID] and not notes
    # The gate: the ensemble is a candidate like any run; a parameter cap below it rules every run out.
    with pytest.raises(NoEligibleRun, match="over the 1-parameter limit"):
        promote(client, "ens", "ens-model", max_params=1)
    done = promote(client, "ens", "ens-model")
    assert done.decision == "promoted"


def test_cross_validations_on_the_same_folds_ensemble_on_their_out_of_fold_predictions(tmp_path):
    """Two CVs of one config on the same folds (seeds 1, 2): the ensemble is chosen and scored on every out-of-fold
    image (each by the fold models that never trained on it) and ships all four fold models."""
    from dermsweep.errors import DataError
    from dermsweep.evaluation.metrics import scores
    from dermsweep.shipping.labelled_data import rebuild_run_data
    from dermsweep.tracking.model_ref import load
    from dermsweep.tracking.store import connect
    from dermsweep.training.cross_fit import cross_fit
    from dermsweep.training.model import logits_inside
    from dermsweep.training.ship_record import read_view_logits
    from dermsweep.training.task import run
    from helpers.config import tiny_run

    settings = ["model.height=32", "model.width=32", "data.split.folds=2", "data.split.seed=3"]
    for seed in (1, 2):
        run(compose([*tiny_run(tmp_path, "cv-ens"), *settings, f"seed={seed}", "tracking.log_model=always"]))
    client = connect(f"sqlite:///{tmp_path}/mlflow.db", create=False)
    cvs = {r.info.run_id: r for r in client.search_runs([client.get_experiment_by_name("cv-ens").experiment_id])}
    cvs = {k: r for k, r in cvs.items() if r.data.tags[rf.ROLE] == "cv"}
    built = ens.build(client, "cv-ens", size=2, method="top", candidates=5)
    assert sorted(built.member_ids()) == sorted(cvs)
    model, ref = load(f"runs:/{built.run_id}/{rf.MODEL}", client)
    ensemble = client.get_run(built.run_id)
    assert ensemble.data.tags[rf.SPLIT_ID] == next(iter(cvs.values())).data.tags[rf.SPLIT_ID]
    logged = read_view_logits(client.download_artifacts(built.run_id, rf.VIEW_LOGITS, str(tmp_path)))
    members = [read_view_logits(client.download_artifacts(i, rf.VIEW_LOGITS, str(tmp_path / i))) for i in cvs]
    # validation = every out-of-fold image once, the members' out-of-fold rows averaged image by image
    assert list(logged.image_ids["val"]) == list(members[0].image_ids["val"]) == list(members[1].image_ids["val"])
    view = next(iter(logged.views["val"]))
    mean = (members[0].views["val"][view] + members[1].views["val"][view]) / 2
    np.testing.assert_allclose(logged.views["val"][view], mean, rtol=1e-5, atol=1e-5)
    assert ensemble.data.metrics["final_val/balanced_accuracy"] == pytest.approx(
        scores(logged.labels["val"], logged.probabilities["val"])["balanced_accuracy"]
    )
    # ... cross-fitted, as a CV's: each fold's rows through gains chosen on the other fold
    folds = pd.read_csv(client.download_artifacts(next(iter(cvs)), rf.FOLDS_TABLE, str(tmp_path)))
    fold_of = dict(zip(folds["image_id"].astype(str), folds["fold"], strict=True))
    fold_of_row = np.array([fold_of[str(i)] for i in logged.image_ids["val"]])
    crossed = cross_fit(
        ens.default_inference(), logged.labels["val"], logged.views["val"], fold_of_row, logged.groups["val"],
        list(ref.meta["class_names"]), "val_balanced_accuracy",
    )  # fmt: skip
    np.testing.assert_allclose(logged.probabilities["val"], crossed.probabilities, rtol=1e-4, atol=1e-6)
    # the model: both bags' fold models inside, checked against the test logits (a CV has no held-out val images)
    assert len(logits_inside(model)) == 4 and built.params == model.count_params()
    # a teacher for distillation out of fold, as a CV is: each training image's target is its out-of-fold row
    from dermsweep.data import prepare
    from dermsweep.training import distillation

    student_cfg = compose(
        [
            *tiny_run(tmp_path, "cv-ens"),
            *settings[:2],
            "data.split.seed=3",
            f"distill.teacher=runs:/{built.run_id}/model",
        ]
    )
    student_cfg.distill.teacher_output, student_cfg.distill.temperature, student_cfg.distill.weight = (
        "out_of_fold",
        1.0,
        1.0,
    )
    student_data = prepare(student_cfg.data, 32, 32, 3, student_cfg.cache_dir)
    taught = distillation.teach(student_cfg, student_data, None, client, 16)
    row = {image_id: i for i, image_id in enumerate(logged.image_ids["val"])}
    expected = logged.probabilities["val"][[row[i] for i in student_data.split.train["image_id"]]]
    assert np.allclose(taught.targets, expected, atol=1e-5)
    assert taught.validation_seen == len(student_data.y["val"])  # the bags trained on them in their other folds
    # export and evaluate need held-out images: an ensemble of bags has none, and says so
    with pytest.raises(DataError, match="ensemble of cross-validations' bags.*--data-dir"):
        rebuild_run_data(built.run_id, *ref.input_size)
