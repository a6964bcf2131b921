"""Distillation (training/distillation.py): soft targets, the teacher's logit cache (reused, and invalidated when
the teacher changes), and a distilled run that is logged, gated and promoted like any run."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from dermsweep.errors import ConfigError
from helpers.config import compose, tiny_run


def test_soft_targets_mix_the_label_with_the_tempered_teacher():
    from dermsweep.training.distillation import soft_targets

    logits = np.array([[2.0, 0.0, -1.0], [0.0, 3.0, 0.0]])
    labels = np.array([0, 2])
    assert np.allclose(soft_targets(labels, logits, 1.0, 0.0), np.eye(3)[labels])
    teacher_only = soft_targets(labels, logits, 2.0, 1.0)
    expected = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)
    assert np.allclose(teacher_only, expected, atol=1e-6)
    mixed = soft_targets(labels, logits, 2.0, 0.5)
    assert np.allclose(mixed.sum(axis=1), 1.0) and mixed.dtype == np.float32
    assert np.allclose(mixed, 0.5 * np.eye(3)[labels] + 0.5 * expected, atol=1e-6)
    # a higher temperature spreads the teacher's probability
    assert soft_targets(labels, logits, 4.0, 1.0)[0].max() < teacher_only[0].max()


def test_soft_targets_and_per_image_weights_reach_every_feed():
    from dermsweep.data.stream import BatchStream
    from dermsweep.data.tf_feed import dataset

    x = np.zeros((10, 8, 8, 3), np.uint8)
    y = np.arange(10) % 2
    targets = np.full((10, 2), 0.5, np.float32)
    weights = np.where(y == 1, 3.0, 1.0).astype(np.float32)
    no_augment = compose(["augment=none"]).augment
    stream = BatchStream(x, y, 2, 4, no_augment, seed=0, targets=targets, weights=weights)
    images, batch_targets, batch_weights = stream.batch(0, 4)
    assert images.shape == (4, 8, 8, 3) and np.allclose(batch_targets, 0.5)
    idx = np.random.default_rng([0, 0, 0]).permutation(10)[:4]  # the stream's first pass (its shuffle domain 0)
    assert np.allclose(batch_weights, weights[idx])
    parts = next(iter(dataset(stream)))
    assert len(parts) == 3 and parts[2].shape == (4,)
    assert len(BatchStream(x, y, 2, 4, no_augment, seed=0).batch(0, 4)) == 2  # no weights: (x, y) as before


def test_a_distilled_cross_validation_sums_what_its_folds_teacher_saw_of_their_validation_images():
    from dermsweep.training.distillation import saw_validation_of_folds

    def fold(seen, images):
        return {"teacher": {"validation_seen": seen, "validation_images": images}}

    assert saw_validation_of_folds([fold(3, 4), fold(5, 5)]) == "8 of 9"
    assert saw_validation_of_folds([fold(0, 4), fold(0, 5)]) is None  # none seen: nothing to say
    assert saw_validation_of_folds([fold(3, 4), fold(None, 5)]) is None  # one fold not known: no claim


@pytest.mark.parametrize(
    "override, says",
    [
        ("distill.temperature=0", "distill.temperature"),
        ("distill.weight=1.5", "distill.weight"),
        ("distill.teacher=' '", "distill.teacher"),
        ("distill.teacher_output=probabilities", "distill.teacher_output"),
    ],
)
def test_distillation_settings_are_checked_before_anything_runs(override, says):
    from dermsweep.training import config

    cfg = compose(["data=synthetic", "model=mobilenet_v1", override])
    with pytest.raises(ConfigError, match=says):
        config.validate(cfg)


def _teacher_file(smoke_run, folder, nudge: float = 0.0):
    """The smoke run's shipped model as a .keras file; `nudge` changes one weight (another teacher)."""
    import mlflow

    from dermsweep.tracking.model_ref import load

    model, ref = load(f"runs:/{smoke_run['run_id']}/model", mlflow.MlflowClient(smoke_run["uri"]))
    path = folder / f"teacher{nudge:g}.keras"
    if nudge:
        bias = next(v for v in model.weights if v.path.endswith("logits/bias"))
        bias.assign(bias.numpy() + nudge * np.arange(bias.shape[0]))
    model.save(path)
    (folder / "model_info.json").write_text(__import__("json").dumps(ref.meta))
    return path


def test_the_teachers_logits_are_cached_by_teacher_and_images(smoke_run, tmp_path, caplog):
    from dermsweep.data import prepare
    from dermsweep.tracking.model_ref import load
    from dermsweep.training import distillation

    a = _teacher_file(smoke_run, tmp_path)
    cfg = compose([*tiny_run(tmp_path, "unused"), f"distill.teacher={a}", "distill.weight=1.0"])
    cfg.distill.teacher_output = "raw"
    data = prepare(cfg.data, int(cfg.model.height), int(cfg.model.width), int(cfg.seed), cfg.cache_dir)

    first = distillation.teach(cfg, data, {i: float(i + 1) for i in range(7)}, None, 16)
    assert not first.from_cache and first.targets.shape == (len(data.y["train"]), 7)
    assert np.allclose(first.weights, data.y["train"] + 1.0)  # each image weighs its true class's weight
    entries = list((tmp_path / "cache" / distillation.CACHE_FOLDER).glob("*.npz"))
    assert [e.stem for e in entries] == [first.key]

    again = distillation.teach(cfg, data, None, None, 16)
    assert again.from_cache and again.key == first.key and again.weights is None
    assert np.array_equal(again.targets, first.targets)

    # its shipped probabilities come from the same cache entry, through the teacher's own final layer
    cfg.distill.teacher_output, cfg.distill.temperature = "shipped", 1.0
    shipped = distillation.teach(cfg, data, None, None, 16)
    assert shipped.from_cache and shipped.key == first.key
    model, _ = load(str(a))
    expected = model.predict(data.x["train"].astype(np.float32), verbose=0)
    assert np.allclose(shipped.targets, expected, atol=1e-5)
    cfg.distill.teacher_output, cfg.distill.temperature = "raw", 2.0

    # the same teacher under another name is the same teacher; changed weights are another one
    shutil.copy(a, tmp_path / "copy.keras")
    cfg.distill.teacher = str(tmp_path / "copy.keras")
    assert distillation.teach(cfg, data, None, None, 16).from_cache
    cfg.distill.teacher = str(_teacher_file(smoke_run, tmp_path, nudge=0.5))
    changed = distillation.teach(cfg, data, None, None, 16)
    assert not changed.from_cache and changed.key != first.key
    assert not np.allclose(changed.targets, first.targets)

    # a damaged entry is computed again, with a warning
    (tmp_path / "cache" / distillation.CACHE_FOLDER / f"{changed.key}.npz").write_bytes(b"not a cache")
    with caplog.at_level(logging.WARNING, logger="dermsweep"):
        assert not distillation.teach(cfg, data, None, None, 16).from_cache
    assert "unreadable" in caplog.text


def test_a_teacher_with_other_classes_is_refused_before_the_run(smoke_run, tmp_path):
    import json

    from dermsweep.data import prepare
    from dermsweep.training import distillation

    path = _teacher_file(smoke_run, tmp_path)
    meta = json.loads((tmp_path / "model_info.json").read_text())
    meta["class_names"] = list(reversed(meta["class_names"]))
    (tmp_path / "model_info.json").write_text(json.dumps(meta))
    cfg = compose([*tiny_run(tmp_path, "unused"), f"distill.teacher={path}"])
    data = prepare(cfg.data, int(cfg.model.height), int(cfg.model.width), int(cfg.seed), cfg.cache_dir)
    with pytest.raises(ConfigError, match="same classes"):
        distillation.teach(cfg, data, None, None, 16)
    # and on a cache hit of raw logits, where the teacher itself is never loaded: its metadata is checked
    meta["class_names"] = list(reversed(meta["class_names"]))
    (tmp_path / "model_info.json").write_text(json.dumps(meta))
    cfg.distill.teacher_output = "raw"
    assert not distillation.teach(cfg, data, None, None, 16).from_cache
    assert distillation.teach(cfg, data, None, None, 16).from_cache
    meta["class_names"] = list(reversed(meta["class_names"]))
    (tmp_path / "model_info.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="same classes"):
        distillation.teach(cfg, data, None, None, 16)
    # out-of-fold targets need a cross-validation's run as the teacher: a file is none
    meta["class_names"] = list(reversed(meta["class_names"]))
    (tmp_path / "model_info.json").write_text(json.dumps(meta))
    cfg.distill.teacher_output = "out_of_fold"
    with pytest.raises(ConfigError, match="out_of_fold needs a cross-validation's run.*names no run"):
        distillation.teach(cfg, data, None, None, 16)


def test_a_distilled_run_is_logged_gated_and_promoted_like_any_run(smoke_run, tmp_path, monkeypatch):
    import mlflow

    from dermsweep.shipping.promotion import promote
    from dermsweep.tracking import run_format as rf
    from dermsweep.tracking.model_ref import load
    from dermsweep.tracking.store import connect
    from dermsweep.training.task import run

    store = smoke_run["store"]
    teacher = f"runs:/{smoke_run['run_id']}/model"
    cfg = compose(
        [
            *tiny_run(store, "distill-test"),
            "model.height=48",  # the student reads smaller images than its teacher (64x64)
            "model.width=48",
            f"distill.teacher={teacher}",
            "distill.temperature=3",
            "tracking.log_model=always",
        ]
    )
    run(cfg)
    client = mlflow.MlflowClient(smoke_run["uri"])
    exp = client.get_experiment_by_name("distill-test")
    (student,) = client.search_runs([exp.experiment_id])
    assert student.info.status == "FINISHED"
    assert student.data.tags[rf.TEACHER] == f"run {smoke_run['run_id']}"
    assert student.data.params["distill.teacher"] == teacher
    assert student.data.params["distill.teacher_run_id"] == smoke_run["run_id"]
    assert 0.0 <= student.data.metrics["run/teacher_train_agreement"] <= 1.0
    description = student.data.tags[rf.DESCRIPTION]
    assert f"distilled from run {smoke_run['run_id']} (shipped output, temperature 3, weight 0.7)" in description

    monkeypatch.setenv("MLFLOW_TRACKING_URI", smoke_run["uri"])
    outcome = promote(connect(smoke_run["uri"], create=False), "distill-test", "distilled-classifier")
    assert outcome.decision == "promoted"
    model, ref = load("models:/distilled-classifier@champion", client)
    assert ref.run_id == student.info.run_id
    assert ref.meta["teacher"]["uri"] == teacher and ref.meta["teacher"]["temperature"] == 3.0
    assert ref.input_size == (48, 48)
    card = client.get_model_version("distilled-classifier", ref.version).description
    assert f"distilled from run {smoke_run['run_id']}" in card
    # a teacher trained on this split's training images saw none of the student's validation images
    assert ref.meta["teacher"]["validation_seen"] == 0 and rf.TEACHER_SAW_VALIDATION not in student.data.tags
    # one that did (a cross-validation's bag: tests/test_cross_validation.py) is named by the gate
    from dermsweep.shipping.promotion import plan

    client.set_tag(student.info.run_id, rf.TEACHER_SAW_VALIDATION, "5 of 9")
    planned, _ = plan(connect(smoke_run["uri"], create=False), "distill-test", "distilled-classifier")
    assert any(
        n.startswith("its teacher trained on its validation images (5 of 9): validation leans") for n in planned.notes
    )
