"""What a person sees in the MLflow UI: the experiment opens on the runs list, bookkeeping (process owners, this
machine's checkpoint path) is out of sight, both reliability diagrams exist, registered versions carry a short tag
set."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import mlflow
import pytest

from dermsweep.tracking import experiment_kind, run_owner
from dermsweep.tracking import run_format as rf
from dermsweep.tracking.store import ensure_experiment


def visible(tags: dict[str, str]) -> dict[str, str]:
    """The tags MLflow 3.17's UI lists on a run page: it hides `mlflow.`- and `_mlflow_`-prefixed keys."""
    return {k: v for k, v in tags.items() if not k.startswith(("mlflow.", "_mlflow_"))}


def test_new_and_old_experiments_open_on_the_runs_list(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    new = ensure_experiment(client, "fresh")
    assert client.get_experiment(new).tags[experiment_kind.KIND_TAG] == "custom_model_development"
    old = client.create_experiment("made-before")  # no kind tag, as experiments made before this change
    assert ensure_experiment(client, "made-before") == old
    assert client.get_experiment(old).tags[experiment_kind.KIND_TAG] == "custom_model_development"
    client.set_experiment_tag(old, experiment_kind.KIND_TAG, "genai_development")  # a person's choice stays
    ensure_experiment(client, "made-before")
    assert client.get_experiment(old).tags[experiment_kind.KIND_TAG] == "genai_development"


def test_printed_links_open_the_runs_view():
    """MLflow 3.17.2's GenAI / Model training switch overrides the experiment's kind tag unless the link asks."""
    from dermsweep.tracking.store import ui_hint

    for uri in ("sqlite:///mlruns/mlflow.db", "http://mlflow.internal:5000"):
        assert ui_hint(uri, "3", "abc").endswith("#/experiments/3/runs/abc?workflowType=machine_learning")


def test_owner_records_are_hidden_and_old_ones_still_read():
    from dermsweep import liveness

    me = liveness.me()
    assert run_owner.owner_key(me).startswith("mlflow.")
    assert rf.CHECKPOINT.startswith("mlflow.")
    legacy = {f"{rf.LEGACY_OWNER}.host.1": me.to_json(), f"{rf.OWNER}.host.2": me.to_json(), "other": "x"}
    assert len(run_owner.owners(legacy)) == 2


@pytest.mark.slow
def test_a_training_run_shows_no_bookkeeping_and_both_reliability_diagrams(smoke_run):
    client = mlflow.MlflowClient(smoke_run["uri"])
    run = client.get_run(smoke_run["run_id"])
    shown = visible(run.data.tags)
    assert not [k for k in shown if "owner" in k or "checkpoint" in k], shown
    assert not [k for k, v in shown.items() if v.startswith(("{", "/"))], shown  # JSON, paths
    assert any(k.startswith(rf.OWNER + ".") for k in run.data.tags)  # still recorded, for the reaper
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.tags.get(experiment_kind.KIND_TAG) == "custom_model_development"
    for part in ("val", "test"):
        listed = [a.path for a in client.list_artifacts(run.info.run_id, f"evaluation/{part}")]
        assert rf.evaluation_artifact(part, rf.RELIABILITY_PNG) in listed, listed
    gains = json.loads(Path(client.download_artifacts(run.info.run_id, rf.GAINS_REPORT)).read_text())
    assert {"reliability_val", "reliability_test"} <= set(gains)


def test_registered_versions_carry_a_short_tag_set(store):
    from helpers.shipping import champion_of

    name = f"short-tags-{uuid.uuid4().hex[:6]}"
    champion_of(store, name)
    client = mlflow.MlflowClient(store.uri)
    mv = client.get_model_version_by_alias(name, rf.CHAMPION)
    metric_tags = sorted(k for k in mv.tags if k.startswith(rf.VERSION_METRIC))
    assert metric_tags == [
        "metric.final_val/balanced_accuracy",
        "metric.final_val/macro_f1",
        "metric.test/balanced_accuracy",
        "metric.test/macro_f1",
    ], metric_tags
    assert len(mv.tags) <= 16, sorted(mv.tags)
