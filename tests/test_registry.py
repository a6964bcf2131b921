"""dermsweep.registry: ranking runs, the promotion gate, aliases, version tags and registry safety."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from dermsweep.shipping import promotion, ranking
from dermsweep.tracking import model_ref
from dermsweep.tracking import run_format as rf
from dermsweep.tracking.store import connect
from helpers.config import REPO, SMALLEST


@pytest.fixture
def client(store):
    return connect(store.uri, create=False)


def fresh_name() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


def test_collect_runs_best_first_with_differing_params(client, store):
    table = ranking.collect_runs(client, "dermsweep", sweep="study-a", finished_only=True)
    assert table.metric == "final_val/balanced_accuracy" and table.direction == "maximize"
    assert [r.metrics[table.metric] for r in table.rows] == [0.8, 0.6]  # pruned/failed 0.99 runs excluded
    assert table.differing == ["augment.name", "trainer.finetune.lr"]
    everything = ranking.collect_runs(client, "dermsweep", sweep=store.a["parent"])
    assert {r.status for r in everything.rows} == {"finished", "pruned", "failed"}
    assert everything.rows[0].metrics[table.metric] == 0.8  # runs without the metric sort last


def test_collect_runs_other_metric_and_direction(client):
    table = ranking.collect_runs(client, "dermsweep", metric="val_loss", finished_only=True)
    assert table.metric == "final_val/loss" and table.direction == "minimize"


def test_unknown_sweep_and_experiment(client):
    with pytest.raises(ranking.NoEligibleRun, match="no sweep"):
        ranking.collect_runs(client, "dermsweep", sweep="no-such-study")
    with pytest.raises(ranking.NoEligibleRun, match="no experiment named"):
        ranking.collect_runs(client, "nope")


def test_promote_notes_better_runs_that_logged_no_model(client, store, monkeypatch):
    """With tracking.log_model=improving a run can rank first yet have no model: promote takes the best run that
    has one, and says which better runs it passed over."""
    from helpers.shipping import activate, log_run

    monkeypatch.chdir(store.root)  # artifacts of the new experiment land in the temp store
    activate(store, monkeypatch)
    with_model = log_run(store.model, "dermsweep-notes", 0.7, study="study-notes", name="has-model")
    log_run(None, "dermsweep-notes", 0.9, study="study-notes", with_model=False, name="better-no-model")
    plan, best = promotion.plan(client, "dermsweep-notes", fresh_name())
    assert best.run_id == with_model and plan.decision == "promote"
    assert any("logged no model" in n and "better-no-model" in n for n in plan.notes), plan.notes


def test_a_run_of_unknown_size_is_not_taken_as_within_the_parameter_limit(client, store, monkeypatch):
    """A run that logged no parameter count (an older dermsweep's) cannot prove it fits a phone: promote passes over
    it and says why, instead of reading its size as 0."""
    from helpers.shipping import activate, log_run

    monkeypatch.chdir(store.root)
    activate(store, monkeypatch)
    sized = log_run(store.model, "dermsweep-unsized", 0.7, study="study-unsized", name="sized")
    log_run(store.model, "dermsweep-unsized", 0.9, study="study-unsized", name="unsized", params={"model.params": ""})
    plan, best = promotion.plan(client, "dermsweep-unsized", fresh_name())
    assert best.run_id == sized
    assert any("recorded no parameter count" in n and "unsized" in n for n in plan.notes), plan.notes


def test_no_eligible_run(client):
    with pytest.raises(ranking.NoEligibleRun, match="no eligible run"):
        promotion.promote(client, "empty", fresh_name())


def test_promote_gate_refusals_force_and_aliases(client, store):
    name = fresh_name()
    first = promotion.promote(client, "dermsweep", name, sweep="study-a")
    assert first.decision == "promoted" and first.version == "1"
    assert first.candidate.run_id == store.a["trials"][1]  # the 0.8 trial, not the pruned/failed 0.99 ones
    mv = client.get_model_version_by_alias(name, "champion")
    assert str(mv.version) == "1" and mv.status == "READY"
    assert mv.tags[rf.SOURCE_RUN_ID] == store.a["trials"][1]
    assert mv.tags[rf.SWEEP] == store.a["parent"]
    assert float(mv.tags["metric.final_val/balanced_accuracy"]) == 0.8
    assert float(mv.tags["metric.test/balanced_accuracy"]) == pytest.approx(0.78)
    assert mv.tags[rf.SPLIT_ID] == "split-a" and "first champion" in mv.tags[rf.PROMOTION_REASON]
    # The model card: the version's description and the run's model_card.md.
    assert "## Scores" in mv.description and "| validation" in mv.description and "not a diagnosis" in mv.description
    card_path = client.download_artifacts(store.a["trials"][1], rf.MODEL_CARD)
    assert Path(card_path).read_text() == mv.description

    # same run again: refused
    with pytest.raises(promotion.PromotionRefused, match="already the champion"):
        promotion.promote(client, "dermsweep", name, sweep="study-a")
    # worse on the same split: refused, with both numbers
    with pytest.raises(promotion.PromotionRefused, match=r"0\.7000 is not better than .* 0\.8000"):
        promotion.promote(client, "dermsweep", name, sweep="study-c")
    # better number on another split: refused as not comparable
    with pytest.raises(promotion.PromotionRefused, match="not comparable"):
        promotion.promote(client, "dermsweep", name, sweep="study-b")
    # dry run: the comparison, and nothing changes
    dry = promotion.promote(client, "dermsweep", name, sweep="study-b", dry_run=True)
    assert dry.decision == "refused" and dry.champion.version == "1"
    dry = promotion.promote(client, "dermsweep", name, sweep="study-b", force=True, dry_run=True)
    assert dry.decision == "dry-run"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    # --force: promoted, old champion becomes @previous
    forced = promotion.promote(client, "dermsweep", name, sweep="study-b", force=True)
    assert forced.decision == "promoted" and forced.version == "2"
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(name, "previous").version) == "1"
    tags = client.get_model_version(name, "2").tags
    assert tags[rf.FORCED] == "true" and "not comparable" in tags[rf.PROMOTION_REASON]
    assert tags[rf.REPLACED_VERSION] == "1"


def test_better_candidate_replaces_champion(client, store):
    name = fresh_name()
    assert promotion.promote(client, "dermsweep", name, sweep="study-c").version == "1"
    p = promotion.promote(client, "dermsweep", name, sweep="study-a")
    assert p.decision == "promoted" and "beats champion v1" in p.reason
    assert str(client.get_model_version_by_alias(name, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(name, "previous").version) == "1"


def test_failed_alias_move_leaves_old_champion(client, store, monkeypatch):
    name = fresh_name()
    promotion.promote(client, "dermsweep", name, sweep="study-c")
    real = client.set_registered_model_alias

    def flaky(model, alias, version):
        if alias == "champion":
            raise RuntimeError("registry went away")
        return real(model, alias, version)

    monkeypatch.setattr(client, "set_registered_model_alias", flaky)
    with pytest.raises(ranking.RegistryError, match="still names the old version"):
        promotion.promote(client, "dermsweep", name, sweep="study-a")
    monkeypatch.undo()
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"


def test_failed_registration_leaves_old_champion(client, store, monkeypatch):
    import mlflow
    from mlflow.exceptions import MlflowException

    name = fresh_name()
    promotion.promote(client, "dermsweep", name, sweep="study-c")

    def broken(*a, **k):
        raise MlflowException("disk full")

    monkeypatch.setattr(mlflow, "register_model", broken)
    with pytest.raises(ranking.RegistryError, match="could not register"):
        promotion.promote(client, "dermsweep", name, sweep="study-a")
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert len(client.search_model_versions(f"name = '{name}'")) == 1


def test_serving_model_is_logged_once_per_run(client, store):
    name1, name2 = fresh_name(), fresh_name()
    v1 = promotion.promote(client, "dermsweep", name1, sweep="study-a")
    v2 = promotion.promote(client, "dermsweep", name2, sweep="study-a")
    s1 = client.get_model_version(name1, v1.version).source
    s2 = client.get_model_version(name2, v2.version).source
    assert s1 == s2  # the run's existing serving model is reused
    exp = client.get_experiment_by_name("dermsweep").experiment_id
    names = [m.name for m in model_ref.logged_models_of_run(client, exp, store.a["trials"][1])]
    assert sorted(names) == ["model", "serving"]


@pytest.mark.slow
def test_real_smoke_run_promotes_serves_and_predicts(tmp_path, monkeypatch):
    """One real dermsweep.task run (synthetic data, smoke trainer) through promote, pyfunc and predict."""
    task = pytest.importorskip("dermsweep.training.task")
    import base64

    import mlflow
    import pandas as pd
    from hydra import compose, initialize_config_dir
    from PIL import Image

    from dermsweep.data.sources.synthetic import render
    from dermsweep.shipping.predict import Predictor

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                *SMALLEST,
                f"tracking.uri={uri}",
                f"tracking.artifact_root={tmp_path}/artifacts",
                "experiment=real-smoke",
                "model.alpha=0.35",
                "model.height=48",
                "model.width=48",
            ],
        )
    task.run(cfg)
    mlflow.set_tracking_uri(uri)
    client = connect(uri, create=False)
    p = promotion.promote(client, "real-smoke", "real-smoke-model")
    assert p.decision == "promoted" and p.candidate.split_id
    champion = "models:/real-smoke-model@champion"
    img = tmp_path / "mel.png"
    Image.fromarray(render("x", 4, 96, 128)).save(img)
    pred = Predictor.from_uri(champion).predict_files([img])[0]
    assert pred.error is None and pred.top[0]["label"] in pred.probabilities
    served = mlflow.pyfunc.load_model(champion).predict(
        pd.DataFrame({"image": [base64.b64encode(img.read_bytes()).decode()]})
    )
    assert served.iloc[0]["probabilities"] == pytest.approx(pred.probabilities, abs=1e-5)
