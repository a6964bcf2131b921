"""An end-to-end smoke run: what the MLflow run holds, the logged model, and errors raised before any run exists."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pytest

from dermsweep.errors import ConfigError, DataError, TrackingError
from dermsweep.tracking import run_format as rf
from dermsweep.training.task import run
from helpers.config import WEIGHTS, compose

pytestmark = pytest.mark.slow


def test_smoke_run_is_fully_tracked(smoke_run):
    client = mlflow.MlflowClient(smoke_run["uri"])
    r = client.get_run(smoke_run["run_id"])
    assert r.info.status == "FINISHED" and r.info.run_name.startswith("v1-a0.25-64x64")
    assert r.data.tags[rf.STATUS] == "finished" and r.data.tags[rf.ROLE] == "single"
    assert r.data.tags[rf.OBJECTIVE_METRIC] == "val_balanced_accuracy"
    assert r.data.tags[rf.BACKEND] == "tensorflow" == r.data.params["hardware.backend"]
    # The task returns the optimised validation metric (what a sweeper optimises).
    assert smoke_run["value"] == pytest.approx(r.data.metrics["final_val/balanced_accuracy"])
    p = r.data.params
    for key in (
        "model.name",
        "model.alpha",
        "model.frozen_fraction",
        "trainer.finetune.lr",
        "augment.rotation",
        "schedule.name",
        "class_weight.name",
        "seed",
        "data.split_id",
        "data.dataset_id",
        "git.commit",
        "hardware.tensorflow",
        "model.weights_source",
    ):
        assert key in p, key
    assert p["model.weights_source"] == "random" and p["data.split_id"] == r.data.tags[rf.SPLIT_ID]
    m = r.data.metrics
    for name in ("balanced_accuracy", "macro_f1", "macro_auc", "accuracy", "top2_accuracy", "loss"):
        assert f"final_val/{name}" in m and f"test/{name}" in m
    assert rf.metric(rf.TEST_CLASS, "recall_mel") in m and rf.metric(rf.TEST_CLASS, "f1_nv") in m
    history = client.get_metric_history(r.info.run_id, rf.epoch_metric("val_balanced_accuracy"))
    assert [h.step for h in history] == [1, 2]  # one per epoch, over both phases
    assert [h.step for h in client.get_metric_history(r.info.run_id, rf.epoch_metric("loss"))] == [1, 2]
    # The MLflow run page: a description, and the three splits as datasets with the split id as their digest.
    assert "validation balanced accuracy" in r.data.tags[rf.DESCRIPTION]
    inputs = {d.dataset.name: d for d in r.inputs.dataset_inputs}
    assert sorted(inputs) == ["synthetic-test", "synthetic-train", "synthetic-validation"]
    assert {d.dataset.digest for d in inputs.values()} == {r.data.tags[rf.SPLIT_ID]}
    arts = {a.path for a in client.list_artifacts(r.info.run_id)}
    arts |= {
        a.path for d in ("evaluation/test", "evaluation/val", "data") for a in client.list_artifacts(r.info.run_id, d)
    }
    for path in (
        rf.CONFIG,
        rf.MODEL_INFO,
        rf.TRAINING_CURVES,
        rf.SPLIT_TABLE,
        rf.evaluation_artifact("test", "confusion_matrix.png"),
        rf.evaluation_artifact("val", "confusion_matrix.png"),
        rf.evaluation_artifact("test", "confusion_matrix.json"),
        rf.evaluation_artifact("test", "classification_report.json"),
        rf.evaluation_artifact("val", "confusion_matrix.json"),
    ):
        assert path in arts, path
    with open(client.download_artifacts(r.info.run_id, rf.evaluation_artifact("test", "confusion_matrix.json"))) as f:
        cm = json.load(f)
    assert np.array(cm["counts"]).sum() == int(p["data.n_test"]) and len(cm["class_names"]) == 7


def test_the_run_charts_page_opens_on_the_learning_curves(smoke_run):
    """MLflow's run page charts one section per metric prefix (the name before its last "/"), sections in
    alphabetical order (RunsChartsCardConfig.getBaseChartAndSectionConfigs): the first must be the per-epoch curves,
    not a wall of single-value bars."""
    client = mlflow.MlflowClient(smoke_run["uri"])
    metrics = client.get_run(smoke_run["run_id"]).data.metrics
    sections = sorted({key.rsplit("/", 1)[0] for key in metrics if "/" in key})
    assert sections[0] == rf.EPOCH, sections
    curves = [key for key in metrics if key.startswith(rf.EPOCH + "/")]
    assert {"epoch/train_loss", "epoch/val_balanced_accuracy", "epoch/lr", "epoch/train_seconds"} <= set(curves)
    assert all(len(client.get_metric_history(smoke_run["run_id"], key)) == 2 for key in curves)  # lines, not bars
    assert not [key for key in metrics if key.startswith(("train/", "val/", "calibration/"))]


def test_logged_model_is_self_contained(smoke_run):
    mlflow.set_tracking_uri(smoke_run["uri"])
    uri = f"runs:/{smoke_run['run_id']}/model"
    model = mlflow.keras.load_model(uri)
    info = mlflow.models.get_model_info(uri)
    # MLflow's Keras 3 flavour: the backend-neutral .keras file, with the backend that trained it
    assert info.flavors["keras"]["keras_backend"] == "tensorflow"
    assert info.metadata["class_names"] == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert (info.metadata["input_height"], info.metadata["input_width"]) == (64, 64)
    from dermsweep.data.sources.synthetic import render

    x = np.stack([render(f"img{i}", i % 7, 64, 64) for i in range(6)]).astype(np.float32)  # raw 0-255 pixels
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (6, 7) and np.allclose(probs.sum(1), 1, atol=1e-4)
    pyfunc = mlflow.pyfunc.load_model(uri)
    assert np.allclose(np.asarray(pyfunc.predict(x)), probs, atol=1e-5)


def test_run_ships_its_gains_and_reports_each(smoke_run):
    """The logged model is the shipped one (views and calibration inside, chosen on validation); each gain is
    reported on its own, with the calibration, the operating point and every view's logits for ensembles."""
    from dermsweep.tracking.model_ref import load
    from dermsweep.training.ship_record import read_view_logits

    client = mlflow.MlflowClient(smoke_run["uri"])
    r = client.get_run(smoke_run["run_id"])
    m = r.data.metrics
    for step in ("plain", "views", "calibrated", "adjusted"):
        for part in ("val", "test"):
            assert rf.metric(rf.GAINS, f"{step}_{part}_balanced_accuracy") in m
    assert m[rf.metric(rf.GAINS, "adjusted_val_balanced_accuracy")] == pytest.approx(
        m[rf.metric(rf.FINAL_VAL, "balanced_accuracy")]
    )
    for key in ("temperature", "prior_tau", "ece_val_before", "ece_val_temperature", "ece_val_after"):
        assert rf.metric(rf.GAINS, key) in m
    # temperature scaling changes confidence, never the decision
    assert m[rf.metric(rf.GAINS, "calibrated_val_balanced_accuracy")] == pytest.approx(
        m[rf.metric(rf.GAINS, "views_val_balanced_accuracy")]
    )
    model, ref = load(f"runs:/{smoke_run['run_id']}/model", client)
    inference = ref.meta["inference"]
    assert inference["views"] in ("none", "flips", "dihedral") and inference["temperature"] > 0
    point = ref.meta.get("operating_point")
    if point is not None:  # the smoke split may hold no melanoma with a threshold to choose
        assert point["class_name"] == "mel" and 0 <= point["threshold"] <= 1
        assert m[rf.metric(rf.OPERATING_POINT, "threshold")] == pytest.approx(point["threshold"])
    logged = read_view_logits(client.download_artifacts(smoke_run["run_id"], rf.VIEW_LOGITS))
    assert len(logged.views["val"]) == 8 and logged.labels["val"].shape[0] == int(r.data.params["data.n_val"])
    assert model.get_layer("probabilities").__class__.__name__ == "CalibratedSoftmax"


def test_pretrained_backbone_on_real_images(ham_subset, tmp_path):
    """The shared ImageNet MobileNet v1 on a tiny real HAM10000 folder: trains, and predictions depend on the image."""
    weights = WEIGHTS / "mobilenet_v1_0.25_224_no_top.weights.h5"
    if not weights.exists():
        pytest.skip("shared weights not present")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    value = run(
        compose(
            [
                "data=ham10000",
                f"data.root={ham_subset}",
                "trainer=smoke",
                "data.max_images=null",
                "model=mobilenet_v1",
                "model.alpha=0.25",
                f"model.weights={weights}",
                "model.frozen_fraction=0.5",  # the rule under test: part of the backbone stays frozen
                "model.height=96",
                "model.width=128",
                f"tracking.uri={uri}",
                f"cache_dir={tmp_path}/cache",
            ]
        )
    )
    (r,) = _runs(uri)
    assert r.info.status == "FINISHED" and r.data.params["model.weights_source"].startswith("file:mobilenet_v1_0.25")
    assert 0.0 <= value <= 1.0 and r.data.metrics[rf.metric(rf.RUN, "frozen_layers")] > 0
    # Pretrained features with BatchNorm in inference mode: predictions differ from image to image.
    from dermsweep.data.images import load_rgb

    mlflow.set_tracking_uri(uri)
    model = mlflow.keras.load_model(f"runs:/{r.info.run_id}/model")
    images = sorted(ham_subset.glob("HAM10000_images_part_1/*.jpg"))[:6]
    x = np.stack([load_rgb(p, 96, 128) for p in images]).astype(np.float32)
    assert np.ptp(np.asarray(model(x, training=False)), axis=0).max() > 1e-3


def _runs(uri):
    client = mlflow.MlflowClient(uri)
    return [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]


@pytest.mark.parametrize(
    "overrides,error,match",
    [
        (["trainer.finetune.lr=0"], ConfigError, "trainer.finetune.lr=0"),
        (["data=ham10000", "data.root=/no/such/dir"], DataError, "no such folder"),
        (
            [
                "model=mobilenet_v2",
                "model.alpha=0.75",
                f"model.weights={WEIGHTS}/mobilenet_v1_0.25_224_no_top.weights.h5",
            ],
            ConfigError,
            "does not fit",
        ),
    ],
)
def test_bad_input_fails_before_any_run(tmp_path, overrides, error, match):
    if "weights" in " ".join(overrides) and not WEIGHTS.exists():
        pytest.skip("shared weights not present")
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with pytest.raises(error, match=match):
        run(compose(["data=synthetic", "trainer=smoke", "model=mobilenet_v1", f"tracking.uri={uri}", *overrides]))
    assert _runs(uri) == []


def test_unreachable_tracking_server_fails_fast(tmp_path):
    with pytest.raises(TrackingError, match="unreachable.*Nothing was trained"):
        run(compose(["data=synthetic", "trainer=smoke", "model=mobilenet_v1", "tracking.uri=http://127.0.0.1:9"]))
