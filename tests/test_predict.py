"""dermsweep.predict: training preprocessing, top-k, bad files reported while the others are predicted."""

from __future__ import annotations

import numpy as np
import pytest

from dermsweep.data.images import load_rgb
from dermsweep.shipping.predict import Predictor, TFLiteRunner
from dermsweep.tracking.model_ref import ModelNotFound, load
from helpers.shipping import CLASSES, SIZE, champion_of, ham_images


@pytest.fixture
def images(tmp_path):
    real = ham_images(2)
    if not real:
        pytest.skip("shared HAM10000 images not found at ../shared/data/ham10000")
    bad = tmp_path / "notes.jpg"
    bad.write_text("this is not an image")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    return real, [bad, empty, tmp_path / "missing.jpg"]


def test_predict_champion_top_k_and_bad_files(store, images):
    real, bad = images
    predictor = Predictor.from_uri(champion_of(store, "predict-test"))
    results = predictor.predict_files([real[0], *bad, real[1]], top_k=3)
    assert [r.error is None for r in results] == [True, False, False, False, True]
    assert "not an image" in results[1].error and "empty" in results[2].error and "cannot read" in results[3].error
    top = results[0].top
    assert len(top) == 3 and top[0]["probability"] >= top[1]["probability"] >= top[2]["probability"]
    assert all(t["label"] in CLASSES and t["name"] for t in top)
    assert sum(results[0].probabilities.values()) == pytest.approx(1.0, abs=1e-4)
    # exactly the training preprocessing: load_rgb at the model's input size
    model, ref = load(champion_of(store, "predict-test"))
    x = load_rgb(real[0], SIZE, SIZE)[None].astype(np.float32)
    expected = np.asarray(model.predict_on_batch(x))[0]
    np.testing.assert_allclose([results[0].probabilities[c] for c in CLASSES], expected, atol=1e-5)


def test_model_references_all_resolve_to_the_same_model(store, tmp_path):
    uri = champion_of(store, "predict-test")
    run_id = store.a["trials"][1]
    x = np.full((1, SIZE, SIZE, 3), 120, np.float32)
    outs = []
    for ref in (uri, "models:/predict-test/1", f"runs:/{run_id}/model", run_id):
        model, info = load(ref)
        assert info.class_names == CLASSES and info.input_size == (SIZE, SIZE) and info.run_id == run_id
        outs.append(np.asarray(model.predict_on_batch(x)))
    keras_file = tmp_path / "m.keras"
    model.save(keras_file)
    outs.append(np.asarray(load(str(keras_file))[0].predict_on_batch(x)))
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], atol=1e-6)

    # a client of this store finds every reference's files there, whatever store the process-global tracking URI
    # names (MLflow resolves models:/ against the global one: a distillation test failed on a worker where an
    # earlier test had left it pointing at its own store)
    import mlflow

    from dermsweep.tracking.store import connect

    given = connect(store.uri, create=False)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/other.db")
    mlflow.set_registry_uri(f"sqlite:///{tmp_path}/other.db")
    try:
        for ref in (uri, "models:/predict-test/1", f"runs:/{run_id}/model", run_id):
            assert load(ref, given)[1].run_id == run_id
    finally:
        mlflow.set_tracking_uri(store.uri)
        mlflow.set_registry_uri(store.uri)


@pytest.mark.parametrize(
    "ref, match",
    [
        ("models:/predict-test@nope", "no registered model"),
        ("models:/no-such-model/3", "no registered model"),
        ("runs:/0123456789abcdef0123456789abcdef/model", "no run"),
        ("/nowhere/model.keras", "no such Keras file"),
        ("something-else", "unrecognised model reference"),
        ("x.tflite", "use `dermsweep predict --tflite"),
    ],
)
def test_bad_model_references(store, ref, match):
    champion_of(store, "predict-test")
    with pytest.raises(ModelNotFound, match=match):
        load(ref)


def test_tflite_runner_rejects_missing_or_garbage(tmp_path):
    with pytest.raises(ModelNotFound, match="no such TFLite file"):
        TFLiteRunner(tmp_path / "none.tflite")
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(ModelNotFound, match="cannot load TFLite"):
        TFLiteRunner(junk)


def test_operating_point_verdict_follows_the_one_decision_rule(tmp_path, capsys):
    """A model whose metadata carries an operating point: predict reports the flag and the decision for each image,
    and the decision is dermsweep.diagnoses.decide's (the rule the web page, REST model and evaluate use)."""
    import json

    from dermsweep.cli import main
    from dermsweep.diagnoses import decide
    from helpers.shipping import meta, tiny_model

    model = tiny_model(epochs=0)
    path = tmp_path / "model.keras"
    model.save(path)
    point = {
        "class_name": "mel",
        "threshold": 0.05,
        "target_sensitivity": 0.8,
        "val_sensitivity": 0.81,
        "val_specificity": 0.62,
    }
    (tmp_path / "model_info.json").write_text(json.dumps(dict(meta(), operating_point=point)))
    from PIL import Image

    files = []
    for i in range(3):
        img = tmp_path / f"img{i}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(img)
        files.append(img)
    results = Predictor.from_uri(str(path)).predict_files(files)
    for r in results:
        p = np.array([r.probabilities[c] for c in CLASSES])
        flag = r.operating_point
        assert flag["flagged"] == (p[CLASSES.index("mel")] >= 0.05)
        assert flag["decision"] == CLASSES[int(decide(p[None], CLASSES.index("mel"), 0.05)[0])]
    assert main(["predict", "--model", str(path), *map(str, files)]) == 0
    out = capsys.readouterr().out
    assert "operating point: mel is flagged when its probability reaches 5.0%" in out
    assert "validation sensitivity 81%" in out and ("FLAGGED" in out or "not flagged" in out)
