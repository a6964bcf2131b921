"""`dermsweep evaluate DATA`: a shipped model scored on a labelled set (one folder per class, or the ISIC 2018 Task 3
images + ground-truth CSV), printed, and recorded as an MLflow evaluation run; its bad-input errors."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from dermsweep import cli
from dermsweep.cli import console
from dermsweep.data.sources.isic2018 import COLUMNS
from dermsweep.data.sources.synthetic import render
from dermsweep.evaluation import metrics
from dermsweep.evaluation.operating_point import OperatingPoint, choose, sensitivity_specificity
from dermsweep.shipping.evaluate import dataset_digest, score
from dermsweep.shipping.labelled_data import Labelled, read_dataset
from dermsweep.tracking import run_format as rf
from dermsweep.tracking.model_ref import ModelRef, load
from helpers.shipping import CLASSES, SIZE, champion_of, meta, write_image_dir

MEL = CLASSES.index("mel")


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def experiment() -> str:
    return f"eval-{uuid.uuid4().hex[:8]}"


def corrupt(path: Path) -> Path:
    path.write_bytes(b"\xff\xd8\xff garbage")
    return path


@pytest.fixture(scope="module")
def class_dir(tmp_path_factory) -> Path:
    """4 synthetic images per class, one folder each, plus one unreadable file."""
    root = write_image_dir(tmp_path_factory.mktemp("eval_folders"), per_class=4)
    corrupt(root / "nv" / "broken.jpg")
    return root


@pytest.fixture(scope="module")
def isic_dir(tmp_path_factory) -> Path:
    """The ISIC archive's layout as it unzips: an images folder beside a ground-truth folder holding the CSV."""
    from PIL import Image

    root = tmp_path_factory.mktemp("isic2018")
    images, truth = root / "ISIC2018_Task3_Test_Input", root / "ISIC2018_Task3_Test_GroundTruth"
    images.mkdir()
    truth.mkdir()
    rows = []
    for c, name in enumerate(CLASSES):
        for i in range(3):
            image = f"ISIC_{c:02d}{i:05d}"
            Image.fromarray(render(image, c, 60, 80)).save(images / f"{image}.jpg", quality=95)
            rows.append({"image": image, **{column: float(code == name) for column, code in COLUMNS.items()}})
    rows.append({"image": "ISIC_9999999", **{column: float(column == "MEL") for column in COLUMNS}})  # no file
    (images / "ATTRIBUTION.txt").write_text("not an image, not matched")
    columns = ["image", "MEL", "NV", "BCC", "AKIEC", "BKL", "DF", "VASC"]
    pd.DataFrame(rows)[columns].to_csv(truth / "ISIC2018_Task3_Test_GroundTruth.csv", index=False)
    return root


@pytest.fixture
def keras_file(store, tmp_path) -> Path:
    """The store's trained tiny model as a .keras file with its metadata beside it (model_info.json)."""
    path = tmp_path / "model.keras"
    store.model.save(path)
    (tmp_path / rf.MODEL_INFO).write_text(json.dumps(meta()))
    return path


def predictions(uri: str, root: Path):
    """The model's probabilities on the set, computed here without the evaluate module."""
    model, ref = load(uri)
    found = read_dataset(root, ref.class_names, SIZE, SIZE)
    return found, np.asarray(model.predict_on_batch(found.x.astype(np.float32)), dtype=np.float64)


def test_class_folders_printed_and_logged_as_an_evaluation_run(store, capsys, class_dir):
    uri = champion_of(store, "eval-test")
    name = experiment()
    rc, out, err = run(capsys, "evaluate", str(class_dir), "--model", uri, "--experiment", name)
    assert rc == 0, err
    for text in (
        "balanced accuracy",
        "macro AUC",
        "calibration error (ECE, 15 bins)",
        "mel sensitivity at argmax",
        "argmax decision (the model's metadata carries no operating point)",
        "folder layout, 28 images, 1 skipped",
        "skipped: nv/broken",
        "confusion matrix",
        "logged: evaluation run",
    ):
        assert text in out, text

    found, probs = predictions(uri, class_dir)
    expected = metrics.scores(found.y, probs)
    client = mlflow.MlflowClient(store.uri)
    (logged,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    assert logged.info.run_id in out
    tags, values = logged.data.tags, logged.data.metrics
    assert tags[rf.ROLE] == "evaluation" and tags[rf.STATUS] == "finished"
    assert any(k.startswith(rf.OWNER + ".") for k in tags)  # claimed by its process: reapable if it is killed
    assert tags[rf.EVALUATED_MODEL] == uri and tags[rf.EVALUATED_MODEL_NAME] == "eval-test"
    assert tags[rf.EVALUATED_VERSION] == "1" and tags[rf.EVALUATED_RUN_ID] == store.a["trials"][1]
    assert tags[rf.EVAL_DATA_LAYOUT] == "folder" and tags[rf.EVAL_DATA_PATH] == str(class_dir.resolve())
    assert tags[rf.EVAL_DECISION] == "argmax" and "balanced accuracy" in tags[rf.DESCRIPTION]

    (data_input,) = logged.inputs.dataset_inputs
    dataset = data_input.dataset
    assert dataset.name == class_dir.name and str(class_dir.resolve()) in dataset.source
    assert dataset.digest == dataset_digest(found.image_ids, [CLASSES[i] for i in found.y])
    assert {t.key: t.value for t in data_input.tags}.get("mlflow.data.context") == "evaluation"

    for key in ("balanced_accuracy", "accuracy", "macro_f1", "macro_auc"):
        assert values[rf.metric(rf.EVAL, key)] == pytest.approx(expected[key]), key
    assert values[rf.metric(rf.EVAL, "n_images")] == 28 and values[rf.metric(rf.EVAL, "n_skipped")] == 1
    mel = found.y == MEL
    assert values[rf.metric(rf.EVAL, "mel_sensitivity")] == pytest.approx(np.mean(probs[mel].argmax(1) == MEL))
    assert values[rf.metric(rf.EVAL, "mel_specificity")] == pytest.approx(np.mean(probs[~mel].argmax(1) != MEL))
    assert values[rf.metric(rf.EVAL_CLASS, "recall_mel")] == values[rf.metric(rf.EVAL, "mel_sensitivity")]
    assert 0 <= values[rf.metric(rf.EVAL, "ece")] <= 1 and rf.metric(rf.EVAL_CLASS, "precision_nv") in values

    def artifacts(path=""):
        for f in client.list_artifacts(logged.info.run_id, path):
            yield from artifacts(f.path) if f.is_dir else [f.path]

    def part(name):
        return rf.evaluation_artifact(rf.EVAL, name)

    files = set(artifacts())
    for name in (rf.CONFUSION_PNG, rf.CONFUSION_JSON, rf.CLASSIFICATION_REPORT, rf.RELIABILITY_PNG):
        assert part(name) in files, name
    assert rf.DATA_PROBLEMS in files
    download = Path(client.download_artifacts(logged.info.run_id, ""))
    assert "nv/broken" in (download / rf.DATA_PROBLEMS).read_text()
    confusion = json.loads((download / part(rf.CONFUSION_JSON)).read_text())
    assert np.sum(confusion["counts"]) == 28 and confusion["class_names"] == CLASSES
    reliability = json.loads((download / part(rf.RELIABILITY_JSON)).read_text())
    assert sum(reliability["count"]) == 28 and reliability["bins"] == 15
    report = json.loads((download / part(rf.EVALUATION_REPORT)).read_text())
    assert report["run_id"] == logged.info.run_id and report["per_class"]["mel"]["support"] == 4


def test_isic2018_layout_as_json_without_logging(store, capsys, isic_dir):
    uri = champion_of(store, "eval-test")
    name = experiment()
    rc, out, _ = run(capsys, "evaluate", str(isic_dir), "--model", uri, "--json", "--no-log", "--experiment", name)
    assert rc == 0
    report = json.loads(out)  # stdout is pure JSON
    assert report["layout"] == "isic2018" and report["n_images"] == 21 and report["run_id"] is None
    assert report["n_skipped"] == 1 and "ISIC_9999999" in report["skipped"][0]
    assert report["dataset_name"] == isic_dir.name and report["decision"]["kind"] == "argmax"
    assert {c: s["support"] for c, s in report["per_class"].items()} == dict.fromkeys(CLASSES, 3)
    found, probs = predictions(uri, isic_dir)
    assert report["metrics"]["balanced_accuracy"] == pytest.approx(metrics.scores(found.y, probs)["balanced_accuracy"])
    assert mlflow.MlflowClient(store.uri).get_experiment_by_name(name) is None

    rc, out, _ = run(capsys, "evaluate", str(isic_dir), "--model", uri, "--json", "--no-log", "--max-images", "10")
    report = json.loads(out)
    assert rc == 0 and 7 <= report["n_images"] <= 10  # stratified: every class keeps an image


def test_operating_point_in_the_model_metadata_is_used(store, capsys, class_dir, keras_file):
    found, probs = predictions(str(keras_file), class_dir)
    point = choose(found.y, probs, MEL, "mel", 1.0)  # the lowest P(mel) of a melanoma: every one caught
    info = keras_file.with_name(rf.MODEL_INFO)
    info.write_text(json.dumps(dict(meta(), operating_point=point.to_meta())))
    name = experiment()
    rc, out, err = run(capsys, "evaluate", str(class_dir), "--model", str(keras_file), "--experiment", name)
    assert rc == 0, err
    assert "mel sensitivity at the operating point" in out and f"P(mel) >= {point.threshold:.4g}" in out
    client = mlflow.MlflowClient(store.uri)
    (logged,) = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    tags, values = logged.data.tags, logged.data.metrics
    assert tags[rf.EVAL_DECISION] == "operating_point" and tags[rf.EVALUATED_MODEL] == str(keras_file)
    assert rf.EVALUATED_VERSION not in tags  # a file has no registered version
    assert values[rf.metric(rf.EVAL, "mel_sensitivity")] == 1.0
    specificity = sensitivity_specificity(found.y, probs, MEL, point.threshold)[1]
    assert values[rf.metric(rf.EVAL, "mel_specificity")] == pytest.approx(specificity)
    assert values[rf.metric(rf.EVAL, "mel_threshold")] == pytest.approx(point.threshold)


def bad_data(kind: str, root: Path) -> Path:
    """A folder that is wrong in one way."""
    if kind == "missing":
        return root / "nowhere"
    root.mkdir()
    if kind == "unknown-layout":  # neither metadata CSV, nor ground truth, nor class folders
        (root / "notes.txt").write_text("x")
    elif kind == "unknown-class":
        write_image_dir(root, per_class=1)
        (root / "nv").rename(root / "naevus")
    elif kind == "empty":
        for name in ("mel", "nv"):
            (root / name).mkdir()
    elif kind == "no-readable-image":
        for name in ("mel", "nv"):
            (root / name).mkdir()
            corrupt(root / name / "a.jpg")
    elif kind == "two-csvs":
        for prefix in ("Training", "Test"):
            (root / f"ISIC2018_Task3_{prefix}_GroundTruth.csv").write_text("image,MEL\n")
    else:
        write_image_dir(root, per_class=1)
    return root


@pytest.mark.parametrize(
    "kind, extra, needle",
    [
        ("missing", [], "nowhere: no such folder"),
        ("unknown-layout", [], "unknown layout: no HAM10000_metadata.csv"),
        ("empty", [], "no images: its sub-folders (mel, nv) hold no .jpg / .jpeg / .png / .bmp files"),
        ("unknown-class", [], "classes ['naevus'] are not classes of this model"),
        ("no-readable-image", [], "no readable images (2 unusable)"),
        ("two-csvs", [], "several ground-truth CSVs"),
        ("good", ["--max-images", "0"], "max images 0: must be at least 1"),
        ("good", ["--batch-size", "0"], "batch size 0: must be at least 1"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(store, capsys, tmp_path, keras_file, kind, extra, needle):
    data = bad_data(kind, tmp_path / "data")
    rc, out, err = run(capsys, "evaluate", str(data), "--model", str(keras_file), "--no-log", *extra)
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert rc == console.EXIT_ERROR and lines[-1].startswith("error: ") and needle in lines[-1], err
    assert "Traceback" not in err and not out


# ---------------------------------------------------------------- the report's rules, without a model
def labelled(y: list[int], ids: list[str] | None = None) -> Labelled:
    return Labelled(
        np.zeros((len(y), 1, 1, 3), np.uint8), np.asarray(y), "test", [], ids or list(map(str, y)), "folder"
    )


def peaked(y: list[int], k: int, right: list[bool]) -> np.ndarray:
    """Probabilities peaked (0.7) on the true class where `right`, else on the next class."""
    probs = np.full((len(y), k), 0.3 / (k - 1))
    for row, (label, ok) in enumerate(zip(y, right, strict=True)):
        probs[row, label if ok else (label + 1) % k] = 0.7
    return probs


def test_score_without_a_watched_class_or_its_images():
    ref = ModelRef("m.keras", meta={"class_names": ["a", "b", "c"]})
    report = score(labelled([0, 1, 2, 2]), peaked([0, 1, 2, 2], 3, [True, True, True, False]), ref, "/x")
    assert report.decision.class_name is None and "no 'mel' class" in report.notes[0]
    assert not any(k.endswith("_sensitivity") for k in report.metrics)
    assert report.per_class["c"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert report.per_class["a"]["precision"] == 0.5 and report.metrics["ece"] == pytest.approx(0.05)

    ref = ModelRef("m.keras", meta={"class_names": ["mel", "nv", "bcc"]})
    report = score(labelled([1, 2]), peaked([1, 2], 3, [True, False]), ref, "/x")
    assert report.metrics["mel_sensitivity"] is None and "no mel images" in report.notes[-1]
    assert report.metrics["mel_specificity"] == 0.5  # bcc mistaken for mel (the next class, cyclically)
    assert report.per_class["mel"]["recall"] is None and report.per_class["mel"]["precision"] == 0.0
    json.dumps(report.to_json(), allow_nan=False)


def test_malformed_or_foreign_operating_points_fall_back_to_argmax():
    y = [0, 0, 1, 1]
    probs = peaked(y, 2, [True, False, True, True])
    good = OperatingPoint("mel", 0.2, 0.9, 0.9, 0.5).to_meta()
    for point, note in (("mel@0.2", "malformed"), (dict(good, class_name="nv"), "names class 'nv'")):
        ref = ModelRef("m.keras", meta={"class_names": ["mel", "b"], "operating_point": point})
        report = score(labelled(y), probs, ref, "/x")
        assert report.decision.kind == "argmax" and note in report.notes[0]
        assert report.metrics["mel_sensitivity"] == 0.5
    ref = ModelRef("m.keras", meta={"class_names": ["mel", "b"], "operating_point": good})
    report = score(labelled(y), probs, ref, "/x")
    assert report.decision.kind == "operating_point" and report.metrics["mel_sensitivity"] == 1.0
    assert report.metrics["mel_specificity"] == 0.0  # P(mel) >= 0.2 everywhere here


def test_dataset_digest_is_the_image_ids_and_labels_in_any_order():
    assert dataset_digest(["a", "b"], ["mel", "nv"]) == dataset_digest(["b", "a"], ["nv", "mel"])
    assert dataset_digest(["a", "b"], ["mel", "nv"]) != dataset_digest(["a", "b"], ["nv", "mel"])


def test_training_and_evaluate_share_one_per_class_definition():
    """A class never predicted has no precision (None, not sklearn's 0), and one absent from the set no recall."""
    from dermsweep.evaluation.metrics import per_class

    counts = np.array([[3, 1, 0], [2, 0, 0], [0, 0, 0]])  # class b never predicted right, class c absent
    found = per_class(counts, ["a", "b", "c"])
    assert found["a"] == {"precision": 0.6, "recall": 0.75, "f1": pytest.approx(2 * 0.6 * 0.75 / 1.35), "support": 4}
    assert found["b"]["precision"] == 0.0 and found["b"]["recall"] == 0.0 and found["b"]["f1"] == 0.0
    assert found["c"] == {"precision": None, "recall": None, "f1": None, "support": 0}
