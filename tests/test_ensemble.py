"""Ensembles: members chosen on validation (greedy with replacement, or top-k), one shipped model averaging their
logits, logged as a run of its own that goes through the promotion gate like any run."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import compose
from dermsweep.shipping import ensemble as ens
from dermsweep.shipping.ranking import NoEligibleRun, RunRow
from dermsweep.tracking import run_format as rf


def _candidate(name: str, value: float) -> ens.Candidate:
    row = RunRow(name, name, "finished", "trial", {}, {}, {}, 0)
    return ens.Candidate(row, {}, {}, value, {})


def test_greedy_selection_adds_with_replacement_and_stops_when_nothing_improves():
    a, b, c = _candidate("a", 0.70), _candidate("b", 0.68), _candidate("c", 0.60)
    # An ensemble's objective: better with b once, better still with a twice, nothing helps after that.
    table = {
        ("a",): 0.70,
        ("a", "b"): 0.73,
        ("a", "c"): 0.69,
        ("a", "a"): 0.70,
        ("a", "a", "b"): 0.71,
        ("a", "b", "b"): 0.72,
        ("a", "a", "b", "c"): 0.70,
        ("a", "b", "c"): 0.72,
    }

    def objective(members):
        return table.get(tuple(sorted(m.row.name for m in members)), 0.0)

    table[("a", "a", "b")] = 0.74  # a second a after b
    chosen = ens._select([a, b, c], 5, "greedy", objective, lambda m: None)
    assert [m.row.name for m in chosen.members] == ["a", "b", "a"]
    assert [t["objective"] for t in chosen.trace] == [0.70, 0.73, 0.74]
    top = ens._select([a, b, c], 2, "top", objective, lambda m: None)
    assert [m.row.name for m in top.members] == ["a", "b"]
    with pytest.raises(ens.EnsembleError, match="no second run improves"):
        ens._select([a, c], 3, "greedy", lambda members: 0.7 if len(members) == 1 else 0.6, lambda m: None)


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
                    "data=synthetic",
                    "trainer=smoke",
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
    from dermsweep.shipping.model_ref import load
    from dermsweep.shipping.promotion import promote

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
