"""`dermsweep runs` reads well: at 100 and 200 columns, on an experiment with two sweeps and two single runs, every
cell whole, only searched hyperparameters, a study column, the objective and its interval first; unknown metrics
and closed pipes handled."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from dermsweep import cli
from dermsweep.cli import runs_table
from dermsweep.tracking import run_format as rf

OBJECTIVE = rf.metric(rf.FINAL_VAL, "balanced_accuracy")


def _params(alpha: float, augment: str, lr: float, n_test: int, size: int = 64) -> dict[str, str]:
    zoom = "0.0" if augment == "none" else "0.1"
    return {
        "model.alpha": str(alpha),
        "model.height": str(size),
        "augment.name": augment,
        "augment.zoom": zoom,
        "trainer.finetune.lr": str(lr),
        # recorded about the run, never chosen: must not show as "differing"
        "data.n_test": str(n_test),
        "model.weights_source": f"/somewhere/{n_test}/weights.h5",
        "model.params": str(200000 + n_test),
        "hardware.platform": f"Linux-{n_test}",
        "trainer.steps_per_epoch_used": str(n_test),
    }


@pytest.fixture(scope="module")
def wide_store(tmp_path_factory, mlflow_db):
    """Experiment `wide`: sweeps smoke-a and smoke-b (2 trials each, one with 95% intervals) and two single runs."""
    import shutil

    import mlflow
    from mlflow.entities import Metric, Param

    root = tmp_path_factory.mktemp("wide_store")
    shutil.copy(mlflow_db, root / "mlflow.db")
    uri = f"sqlite:///{root}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    exp = client.create_experiment("wide", artifact_location=str(root / "artifacts"))
    runs: dict[str, str] = {}

    def log(name: str, value: float, params: dict[str, str], tags: dict[str, str], interval: bool = False) -> None:
        run = client.create_run(exp, run_name=name, tags={rf.STATUS: "finished", **tags})
        metrics = {OBJECTIVE: value, rf.metric(rf.TEST, "balanced_accuracy"): value - 0.05}
        if interval:
            metrics[OBJECTIVE + "_lo95"], metrics[OBJECTIVE + "_hi95"] = value - 0.04, value + 0.03
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, v, 0, 0) for k, v in metrics.items()],
            params=[Param(k, v) for k, v in params.items()],
        )
        client.set_terminated(run.info.run_id)
        runs[name] = run.info.run_id

    for study, base in (("dermsweep-smoke-a", 0.6), ("dermsweep-smoke-b", 0.5)):
        parent = client.create_run(exp, run_name=f"sweep-{study}", tags={rf.ROLE: "sweep", rf.STUDY_NAME: study})
        for i in range(2):
            log(
                f"trial-{i}-{study}",
                base + 0.1 * i,
                _params(0.25 * (i + 1), ["none", "light"][i], 10.0 ** -(2 + i), 30 + i),
                {rf.ROLE: "trial", rf.STUDY_NAME: study, rf.PARENT_RUN_ID: parent.info.run_id},
                interval=study.endswith("a"),
            )
    log("single-1", 0.55, _params(0.5, "light", 1e-3, 40, size=96), {rf.ROLE: "single"})
    log("single-2", 0.45, _params(0.25, "none", 1e-4, 41, size=96), {rf.ROLE: "single"})
    return {"uri": uri, "runs": runs}


def runs_cli(capsys, store, *argv):
    rc = cli.main(["runs", "--tracking-uri", store["uri"], "--experiment", "wide", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def table_lines(out: str) -> list[str]:
    """The table's header and rows (between the title and the notes)."""
    lines = out.splitlines()
    rule = next(i for i, line in enumerate(lines) if set(line.replace(" ", "")) == {"-"})
    return lines[rule - 1 : rule + 1 + 6]


def cells(line: str) -> list[str]:
    return re.split(r"\s{2,}", line.strip())


@pytest.mark.parametrize("width", [100, 200])
def test_runs_reads_well_at_100_and_200_columns(wide_store, capsys, width):
    rc, out, _ = runs_cli(capsys, wide_store, "--width", str(width))
    assert rc == 0
    lines = table_lines(out)
    assert all(len(line) <= width for line in lines), "\n".join(lines)
    assert all(len(line) <= width for line in out.splitlines())  # the notes below the table too
    header = cells(lines[0])
    # the objective and its interval first, then the test figure and the study
    assert header[:6] == ["#", header[1], "val bal_acc", "95% interval", "test bal_acc", "study"], header
    rows = [cells(line) for line in lines[2:]]
    ids = [row[1] for row in rows]
    assert all(len(i) >= 8 for i in ids) and len(set(ids)) == 6
    full = set(wide_store["runs"].values())
    assert all(any(f.startswith(i) for f in full) for i in ids)
    assert rows[0][2] == "0.7000" and rows[0][3] == "0.660-0.730" and rows[0][5] == "dermsweep-smoke-a"
    assert "(single)" in out
    # no cell cut to a stub: every column at least as wide as its header, no "…" in numbers
    assert "…" not in out
    # only chosen hyperparameters; augment.zoom follows from augment.name, so only the name shows
    for derived in ("n_test", "weights_source", "params", "platform", "zoom", "steps_per_epoch_used"):
        assert derived not in out
    if width == 200:
        assert ids == [i for i in ids if len(i) == 32]  # whole run ids when they fit
        for key in ("alpha", "augment", "lr", "height", "name"):  # model.alpha, augment.name, trainer.finetune.lr
            assert key in header
        assert "not shown" not in out
    else:
        assert "not shown at 100 columns:" in out  # what was left out is said
        assert "run ids: their first 8 characters" in out


def test_runs_metric_must_exist(wide_store, capsys):
    rc, out, err = runs_cli(capsys, wide_store, "--metric", "val_f1")
    assert rc == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "'val_f1'" in lines[0] and "final_val/balanced_accuracy" in lines[0], err
    rc, out, _ = runs_cli(capsys, wide_store, "--metric", "test_balanced_accuracy")
    assert rc == 0 and "test/balanced_accuracy" in out


def test_runs_json_into_a_closed_pipe_is_quiet(wide_store):
    cmd = f"{sys.executable} -m dermsweep runs --tracking-uri '{wide_store['uri']}' --experiment wide --json | head -1"
    done = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "{" and done.stderr == "", done.stderr


def test_unknown_sweep_hint_is_true(wide_store, capsys):
    rc, _, err = runs_cli(capsys, wide_store, "--sweep", "no-such-study")
    assert rc == 2 and "study" in err
    rc, out, _ = runs_cli(capsys, wide_store)
    assert "study" in table_lines(out)[0]  # the hint points at a column that exists
    rc, out, _ = runs_cli(capsys, wide_store, "--sweep", "dermsweep-smoke-b", "--json")
    assert {r["name"] for r in json.loads(out)["runs"]} == {"trial-0-dermsweep-smoke-b", "trial-1-dermsweep-smoke-b"}


def test_fit_shortens_ids_then_drops_least_important():
    ids = ["a" * 24 + "00000001", "a" * 24 + "00000002"]
    id_col = runs_table.Column("run id", list(ids), runs_table.KEEP_ALWAYS)
    columns = [
        runs_table.Column("#", ["1", "2"], runs_table.KEEP_ALWAYS),
        id_col,
        runs_table.Column("param.one", ["x", "y"], runs_table.PARAM),
        runs_table.Column("split", ["s", "s"], runs_table.DETAIL),
    ]
    kept, dropped = runs_table.fit(columns, 200, id_col)
    assert dropped == [] and id_col.cells == ids
    kept, dropped = runs_table.fit(columns, 40, id_col)
    assert id_col.cells == ids  # unique only at full length: kept whole
    assert dropped == ["param.one", "split"] and [c.header for c in kept] == ["#", "run id"]
    assert runs_table.short_ids(["abcdef0123", "abcdef0199", "ffffffff00"]) == ["abcdef012", "abcdef019", "ffffffff0"]
    labels = runs_table.param_labels(["augment.name", "model.alpha", "trainer.frozen.lr", "trainer.finetune.lr"])
    assert labels == {
        "augment.name": "augment",
        "model.alpha": "alpha",
        "trainer.frozen.lr": "frozen.lr",
        "trainer.finetune.lr": "finetune.lr",
    }


def test_a_run_without_a_param_is_not_a_different_value():
    """An ensemble records no training params and an older run lacks a key added since: neither makes every
    shared setting a column (the real CV experiment showed image_glob and class_weight, and hid seed and folds)."""
    from dermsweep.shipping.ranking import RunRow, _differing_params

    cv = [{"seed": "1", "data.image_glob": "*.jpg"}, {"seed": "2", "data.image_glob": "*.jpg"}]
    rows = [RunRow(str(i), str(i), "finished", "cv", {}, p, {}, 0) for i, p in enumerate([*cv, {"ensemble.size": "2"}])]
    assert _differing_params(rows) == ["seed"]
    assert runs_table.shown_params(["data.image_glob", "seed"], [*cv, {}]) == ["seed"]


def test_a_weak_or_retried_fold_or_a_teacher_that_saw_validation_is_pointed_out_below_the_table(wide_store, capsys):
    import mlflow

    run_id, retried_id = wide_store["runs"]["single-1"], wide_store["runs"]["single-2"]
    store = mlflow.MlflowClient(wide_store["uri"])
    store.set_tag(run_id, rf.WEAK_FOLDS, "3")
    store.set_tag(retried_id, rf.RETRIED_FOLDS, "2,4")
    rc, out, _ = runs_cli(capsys, wide_store, "--width", "100")
    assert rc == 0
    (note,) = [line for line in out.splitlines() if "far below its other folds" in line]
    assert run_id.startswith(note.split(":")[0]) and "fold 3 far below its other folds" in note and len(note) <= 100
    (retry,) = [line for line in out.splitlines() if "trained again" in line]
    assert retried_id.startswith(retry.split(":")[0]) and "folds 2, 4 trained again with another seed" in retry
    assert len(retry) <= 100
    # a distilled run whose teacher trained on its validation images (a CV bag's student) says so too
    store.set_tag(run_id, rf.TEACHER_SAW_VALIDATION, "1432 of 1432")
    rc, out, _ = runs_cli(capsys, wide_store, "--width", "100")
    (saw,) = [line for line in out.splitlines() if "teacher trained on" in line]
    assert (
        saw
        == f"{saw.split(':')[0]}: teacher trained on its validation images (1432 of 1432): validation leans optimistic"
    )
    assert run_id.startswith(saw.split(":")[0]) and len(saw) <= 100
