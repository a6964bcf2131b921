"""Broken local stores: a corrupt or emptied mlflow.db or optuna.db gets one line naming the file and what to do
(exit 2 from the CLI), and the file is left exactly as it was."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from dermsweep import cli

OLD = time.time() - 600  # an emptied file, not one another process is creating right now


def _empty(path: Path) -> None:
    path.write_bytes(b"")
    os.utime(path, (OLD, OLD))


def _garbage(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _header_then_garbage(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(8192))


BREAKS = {"empty": _empty, "not sqlite": _garbage, "damaged": _header_then_garbage}


@pytest.mark.parametrize("kind", BREAKS)
def test_a_broken_mlflow_db_is_one_line_exit_2_and_left_as_it_was(tmp_path, capsys, kind):
    db = tmp_path / "mlflow.db"
    BREAKS[kind](db)
    before = db.read_bytes()
    code = cli.main(["runs", "--tracking-uri", f"sqlite:///{db}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: MLflow tracking store {db} ") and "Restore it from a backup" in err[0]
    assert db.read_bytes() == before


def test_training_refuses_a_broken_mlflow_db_before_anything(tmp_path):
    from dermsweep.errors import TrackingError
    from dermsweep.tracking.store import connect

    db = tmp_path / "mlflow.db"
    _empty(db)
    with pytest.raises(TrackingError, match="empty"):
        connect(f"sqlite:///{db}", create=True)  # training's connect: an emptied store is not a new one
    assert db.stat().st_size == 0


def test_a_fresh_0_byte_file_is_left_to_the_process_creating_it(tmp_path, mlflow_db):
    from dermsweep.tracking.store_files import check_sqlite_file

    fresh = tmp_path / "new.db"
    fresh.write_bytes(b"")
    check_sqlite_file(fresh, "store", "")  # just created by another process: not an error
    shutil.copyfile(mlflow_db, tmp_path / "good.db")
    check_sqlite_file(tmp_path / "good.db", "store", "")


@pytest.mark.parametrize("kind", BREAKS)
def test_a_broken_optuna_db_is_one_line_and_left_as_it_was(tmp_path, kind):
    from hydra.errors import CompactHydraException

    from dermsweep.sweep.storage import open_storage

    db = tmp_path / "optuna.db"
    BREAKS[kind](db)
    before = db.read_bytes()
    with pytest.raises(CompactHydraException) as caught:  # Hydra prints its message alone, no traceback
        open_storage(f"sqlite:///{db}")
    assert str(caught.value).startswith(f"error: Optuna study storage {db} ")
    assert "\n" not in str(caught.value) and db.read_bytes() == before


def test_a_sweep_on_a_broken_optuna_db_exits_2_in_one_line(tmp_path):
    """Through train.py -m: the sweep is refused as a single run's mistake is (exit 2, not Hydra's 1), no traceback,
    no trial or MLflow run, the file untouched."""
    import subprocess
    import sys

    from helpers.config import REPO, SMALLEST

    db = tmp_path / "optuna.db"
    _header_then_garbage(db)
    before = db.read_bytes()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DERMSWEEP_", "MLFLOW_", "HYDRA_"))}
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "train.py"),
            "-m",
            "+sweep=smoke",
            *SMALLEST,
            f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
            f"hydra.sweeper.storage=sqlite:///{db}",
            f"hydra.sweep.dir={tmp_path}/multirun",
        ],
        cwd=tmp_path,
        env={**env, "TF_CPP_MIN_LOG_LEVEL": "2"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr[-3000:]
    assert lines[-1].startswith(f"error: Optuna study storage {db} "), lines
    assert db.read_bytes() == before and not (tmp_path / "mlflow.db").exists()
