"""The model card and the training-data claims (issue 23): what a model says about its data comes from its run; the
score table is a proper Markdown table, with 95% intervals when the run logged them."""

from __future__ import annotations

import json
from types import SimpleNamespace

from dermsweep.shipping.model_card import model_card
from dermsweep.shipping.ranking import RunRow
from dermsweep.shipping.training_data import TrainingData, from_params, from_run

META = {"backbone": "mobilenet_v1", "input_height": 64, "input_width": 64, "class_names": ["akiec", "bcc", "nv"]}
SYNTHETIC = {"data.source": "synthetic", "data.n_train": "168", "data.n_val": "56", "data.n_test": "56"}
HAM = {"data.source": "ham10000", "data.n_train": "7152", "data.n_val": "1431", "data.n_test": "1432"}


def row(params: dict, metrics: dict | None = None) -> RunRow:
    metrics = metrics or {"final_val/balanced_accuracy": 0.91, "test/balanced_accuracy": 0.913, "test/accuracy": 0.9}
    return RunRow("r1", "trial-1", "FINISHED", "trial", metrics, params, {}, 0)


def table(card: str) -> list[list[str]]:
    lines = [line for line in card.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]


def test_a_synthetic_champion_says_synthetic_never_ham10000():
    card = model_card("demo", "1", row(SYNTHETIC), META)
    assert "HAM10000" not in card
    assert "synthetic images" in card.split("\n\n")[1]  # the first paragraph, where the claim is made
    assert "168 training, 56 validation and 56 test images" in card
    assert "say nothing about how it does on real lesion photos" in card


def test_a_ham10000_run_names_ham10000_and_its_limits():
    card = model_card("dermsweep", "3", row(HAM), META)
    assert "dermatoscopic images (HAM10000)" in card and "two sites and mostly light skin" in card
    assert "say nothing about" not in card


def test_a_run_that_recorded_no_data_says_so():
    card = model_card("x", "1", row({}), META)
    assert "data its source run did not record" in card and "HAM10000" not in card


def test_scores_are_a_markdown_table_with_one_cell_per_header():
    """The header row is words in their own cells (MLflow showed 'balanced_accuracymacro_f1...'), the table is set
    off by blank lines (a table glued to a heading or paragraph is not parsed as one), and each row has as many
    cells as the header."""
    card = model_card("x", "1", row(HAM), META)
    rows = table(card)
    header, rule, *body = rows
    assert header == ["Split", "Balanced accuracy", "Macro F1", "Macro AUC", "Accuracy"]
    assert all(set(cell) <= set(":-") and "---" in cell for cell in rule)
    assert len(body) == 2 and all(len(r) == len(header) for r in body)
    lines = card.splitlines()
    first = lines.index(next(line for line in lines if line.startswith("|")))
    last = max(i for i, line in enumerate(lines) if line.startswith("|"))
    assert lines[first - 1] == "" and lines[last + 1] == ""
    assert body[1][1] == "0.913" and body[1][2] == "n/a"


def test_intervals_show_when_the_run_logged_them():
    metrics = {
        "test/balanced_accuracy": 0.713,
        "test/balanced_accuracy_lo95": 0.69,
        "test/balanced_accuracy_hi95": 0.736,
        "final_val/balanced_accuracy": 0.72,
    }
    card = model_card("x", "1", row(HAM, metrics), META)
    test_row = table(card)[3]
    assert test_row[1] == "0.713 [0.690, 0.736]"
    assert table(card)[2][1] == "0.720"  # no interval logged for validation: the value alone
    assert "95% intervals" in card
    assert "95% intervals" not in model_card("x", "1", row(HAM), META)


def test_training_data_from_params_and_from_an_ensembles_dataset_inputs():
    assert from_params(SYNTHETIC) == TrainingData("synthetic", {"train": 168, "val": 56, "test": 56}, None)
    assert not from_params(SYNTHETIC).real_photos and from_params(HAM).real_photos

    def dataset_input(name: str, context: str, rows: int):
        dataset = SimpleNamespace(name=name, profile=json.dumps({"num_rows": rows}))
        return SimpleNamespace(dataset=dataset, tags=[SimpleNamespace(key="mlflow.data.context", value=context)])

    ensemble = SimpleNamespace(
        data=SimpleNamespace(params={"ensemble.size": "3"}),
        inputs=SimpleNamespace(
            dataset_inputs=[
                dataset_input("synthetic-train", "train", 168),
                dataset_input("synthetic-validation", "validation", 56),
                dataset_input("synthetic-test", "test", 56),
            ]
        ),
    )
    found = from_run(ensemble)
    assert found.source == "synthetic" and found.images == {"train": 168, "val": 56, "test": 56}
    nothing = SimpleNamespace(data=SimpleNamespace(params={}), inputs=SimpleNamespace(dataset_inputs=[]))
    assert not from_run(nothing).recorded


def test_the_calibration_error_is_read_from_new_and_older_runs():
    """Runs before 2026-12-05 logged the calibration figures under calibration/, later runs under gains/."""
    meta = {**META, "inference": {"views": "flips", "temperature": 1.2, "prior_tau": 0.5}}
    for section in ("gains", "calibration"):
        metrics = {f"{section}/ece_val_before": 0.081, f"{section}/ece_val_after": 0.034}
        card = model_card("x", "1", row(HAM, metrics), meta)
        assert "calibration error (ECE) on validation: 0.081 before, 0.034 after" in card, section


def test_a_student_names_its_teacher_and_what_the_teacher_saw_of_its_validation_images():
    teacher = {"uri": "runs:/abc/model", "description": "run abc", "output": "out_of_fold", "temperature": 2.0}
    plain = model_card("x", "1", row(HAM), {**META, "teacher": {**teacher, "validation_seen": 0}})
    assert "distilled from run abc (`runs:/abc/model`): trained on its out-of-fold probabilities" in plain
    assert "lean optimistic" not in plain
    seen = {**teacher, "validation_seen": 1431, "validation_images": 1431}
    card = model_card("x", "1", row(HAM), {**META, "teacher": seen})
    assert "its teacher trained on 1431 of its 1431 validation images" in card and "lean optimistic" in card
