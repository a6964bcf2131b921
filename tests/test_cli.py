"""The `dermsweep` command line: every subcommand, its refusals and bad-input paths (one line, no traceback)."""

from __future__ import annotations

import json
import uuid

import pytest

from dermsweep import cli
from dermsweep.cli import console, demo
from helpers.shipping import champion_of, ham_images, log_sweep


def run(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(err: str, needle: str):
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines and lines[-1].startswith("error: ") and needle in lines[-1], err
    assert "Traceback" not in err


def test_runs_table_and_json(store, capsys):
    rc, out, _ = run(capsys, "runs", "--sweep", "study-a")
    header = out.splitlines()[1].split()  # searched params by short names: trainer.finetune.lr, augment.name
    assert rc == 0 and "final_val/balanced_accuracy" in out and "lr" in header and "augment" in header
    assert "pruned" not in out
    rc, out, _ = run(capsys, "runs", "--sweep", store.a["parent"], "--all", "--json", "--metric", "val_loss")
    data = json.loads(out)
    assert data["metric"] == "final_val/loss" and data["direction"] == "minimize"
    assert {r["status"] for r in data["runs"]} == {"finished", "pruned", "failed"}
    assert data["differing_params"] == ["augment.name", "trainer.finetune.lr"]


def test_promote_dry_run_refusal_force(store, capsys):
    name = f"cli-{uuid.uuid4().hex[:6]}"
    rc, out, _ = run(capsys, "promote", "--name", name, "--sweep", "study-a", "--dry-run", "--json")
    assert rc == 0 and json.loads(out)["decision"] == "dry-run"
    rc, out, _ = run(capsys, "promote", "--name", name, "--sweep", "study-a")
    assert rc == 0 and f"{name} v1 is now @champion" in out
    rc, out, err = run(capsys, "promote", "--name", name, "--sweep", "study-c")
    assert rc == console.EXIT_REFUSED and "not better" in err and "0.7000" in out and "0.8000" in out
    rc, out, err = run(capsys, "promote", "--name", name, "--sweep", "study-b", "--dry-run")
    assert rc == console.EXIT_REFUSED and "not comparable" in out and "nothing changed" in out
    rc, out, _ = run(capsys, "promote", "--name", name, "--sweep", "study-b", "--force", "--json")
    data = json.loads(out)
    assert rc == 0 and data["decision"] == "promoted" and data["version"] == "2" and data["forced"]


def test_promote_no_eligible_run(store, capsys):
    rc, _, err = run(capsys, "promote", "--experiment", "empty", "--name", "never")
    assert rc == console.EXIT_ERROR
    assert_one_line_error(err, "no eligible run")


def test_predict_cli(store, capsys, tmp_path):
    files = ham_images(2)
    if not files:
        pytest.skip("shared HAM10000 images not found at ../shared/data/ham10000")
    champion_of(store, "cli-predict")
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff garbage")
    rc, out, err = run(
        capsys,
        "predict",
        str(files[0]),
        str(bad),
        str(files[1]),
        "--model",
        "models:/cli-predict@champion",
        "--top-k",
        "2",
    )
    assert rc == console.EXIT_PARTIAL and files[0].name in out and files[1].name in out
    assert "broken.jpg" in err and "Traceback" not in err
    rc, out, _ = run(capsys, "predict", str(files[0]), "--model", "models:/cli-predict@champion", "--json")
    data = json.loads(out)
    assert rc == 0 and len(data["predictions"][0]["top"]) == 3 and data["predictions"][0]["error"] is None


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["predict", "x.jpg", "--model", "models:/nobody@champion"], "no registered model"),
        (["predict", "x.jpg", "--model", "models:/cli-predict@staging"], "no registered model"),
        (["predict", "x.jpg", "--tflite", "/nope/model.tflite"], "no such TFLite file"),
        (["export", "--model", "runs:/0123456789abcdef0123456789abcdef/model"], "no run"),
        (["runs", "--experiment", "nope"], "no experiment named"),
        (["runs", "--sweep", "nope"], "no sweep"),
        (["export", "--model", "models:/cli-predict@champion", "--formats", "tflite_f99"], "unknown tflite_f99"),
    ],
)
def test_bad_input_is_one_line(store, capsys, argv, needle):
    champion_of(store, "cli-predict")
    rc, _, err = run(capsys, *argv)
    assert rc == console.EXIT_ERROR
    assert_one_line_error(err, needle)


def test_unreachable_or_missing_store(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    rc, _, err = run(capsys, "--tracking-uri", "http://127.0.0.1:9", "runs")
    assert rc == console.EXIT_ERROR
    assert_one_line_error(err, "MLflow tracking server http://127.0.0.1:9 is unreachable")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    rc, _, err = run(capsys, "predict", "x.jpg")
    assert rc == console.EXIT_ERROR
    assert_one_line_error(err, "no tracking store at mlruns/mlflow.db")


def test_export_cli_json(store, capsys, tmp_path):
    champion_of(store, "cli-predict")
    rc, out, _ = run(
        capsys,
        "export",
        "--model",
        "models:/cli-predict@champion",
        "--out",
        str(tmp_path / "x"),
        "--runs",
        "2",
        "--no-log",
        "--json",
        "--formats",
        "tflite_f32,tflite_int8",
    )
    data = json.loads(out)
    assert rc == 0 and [f["format"] for f in data["formats"]] == ["keras", "tflite_f32", "tflite_int8"]
    assert data["logged_to"] is None
    # int8 with a fixed number of layers kept float (no search): the table is followed by what stayed float.
    rc, out, _ = run(
        capsys,
        "export",
        "--model",
        "models:/cli-predict@champion",
        "--out",
        str(tmp_path / "y"),
        "--runs",
        "2",
        "--no-log",
        "--formats",
        "tflite_int8",
        "--int8-float-layers",
        "1",
    )
    assert rc == 0 and "tflite_int8: layers kept float" in out and "Kept float: 1 layer(s): " in out
    rc, _, err = run(capsys, "export", "--model", "models:/cli-predict@champion", "--int8-min-agreement", "2")
    assert rc == console.EXIT_ERROR and "min_agreement" in err


def test_demo_with_stubbed_sweep(store, capsys, monkeypatch, tmp_path):
    """The demo runs the sweep (stubbed here: logs a small sweep into the store), promotes, says where to look."""
    calls = []

    def fake_sweep(sweep, extra):
        calls.append(sweep)
        log_sweep(study=f"demo-{uuid.uuid4().hex[:6]}", values=(0.85,), models=[store.model], extra_failed=False)
        return 0

    monkeypatch.setattr(demo, "run_sweep", fake_sweep)
    name = f"demo-{uuid.uuid4().hex[:6]}"
    rc, out, _ = run(capsys, "demo", "--name", name)
    assert rc == 0 and calls == ["demo"]
    assert f"{name} v1 is now @champion" in out
    for hint in ("make ui", "http://127.0.0.1:5000", "dermsweep runs --sweep", "dermsweep predict", "dermsweep export"):
        assert hint in out
    last = out.strip().splitlines()[-3:]  # the last lines say how to get `dermsweep` on PATH, and the dashboard
    assert any("optuna-dashboard sqlite:///mlruns/optuna.db" in line for line in last)
    assert ".venv/bin/dermsweep" in last[-1] and "source .venv/bin/activate" in last[-1]
    monkeypatch.setattr(demo, "run_sweep", lambda *a: 1)
    rc, _, err = run(capsys, "demo", "--name", name)
    assert rc == console.EXIT_ERROR
    assert_one_line_error(err, "the sweep failed")


def test_serve_starts_the_guarded_scoring_server(store, capsys, monkeypatch):
    from dermsweep.shipping import rest_server

    champion_of(store, "cli-predict")
    seen = {}

    def fake_serve(uri, host, port, allow_hosts, limits):
        seen.update(uri=uri, host=host, port=port, allow_hosts=allow_hosts, limits=limits)
        return 0

    monkeypatch.setattr(rest_server, "serve", fake_serve)
    argv = ["serve", "--model", "models:/cli-predict@champion", "--port", "5055", "--allow-host", "lesions.example"]
    rc, _, err = run(capsys, *argv, "--max-body-mb", "8")
    assert rc == 0 and "http://127.0.0.1:5055/invocations" in err
    assert seen["uri"] == "models:/cli-predict@champion" and (seen["host"], seen["port"]) == ("127.0.0.1", 5055)
    assert seen["allow_hosts"] == ["lesions.example"] and seen["limits"].max_body == 8 * 1024 * 1024
    rc, _, err = run(capsys, "serve", "--model", "models:/cli-predict@champion", "--max-body-mb", "0")
    assert rc == console.EXIT_ERROR and "--max-body-mb" in err
    rc, _, err = run(capsys, "serve", "--model", "models:/cli-predict@nope")
    assert rc == console.EXIT_ERROR
    assert_one_line_error(err, "no registered model")
