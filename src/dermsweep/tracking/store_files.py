"""Checks on a local SQLite store file (MLflow's mlflow.db, Optuna's optuna.db) before a library opens it: a
corrupt or emptied file gets one line naming it and what to do, and is never written to. Without this, MLflow
treats a 0-byte mlflow.db as a new store and migrates a fresh schema into it, and a corrupt one ends in pages of
SQLAlchemy traceback (Optuna's in a misleading "exceeding max length").

SQLite and the standard library only: the sweep package (Optuna's storage) calls it too.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from ..errors import TrackingError

HEADER = b"SQLite format 3\x00"
# A file another process has just created is 0 bytes until its first write: only an older one is "emptied".
EMPTY_GRACE_S = 30.0


def sqlite_path(url: str) -> Path | None:
    """The file of a `sqlite:///...` URL (None for anything else, and for in-memory databases)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.removeprefix("sqlite:///").split("?", 1)[0]
    if not path or path.startswith(":memory:"):
        return None
    return Path(path)


def check_sqlite_file(path: Path, what: str, fix: str) -> None:
    """Raise TrackingError when `path` exists but is not a readable SQLite database. `what` names the store
    ("MLflow tracking store"), `fix` says what else the user may do; nothing is written to the file."""
    if not path.is_file():
        return
    try:
        size = path.stat().st_size
        if size == 0:
            if time.time() - path.stat().st_mtime < EMPTY_GRACE_S:
                return  # being created by another process right now
            raise _broken(path, what, "is an empty (0-byte) file, not a database", fix)
        with path.open("rb") as f:
            header = f.read(len(HEADER))
    except OSError as exc:
        raise TrackingError(f"{what} {path} cannot be read ({exc.strerror or exc}); check its permissions") from exc
    if header != HEADER:
        raise _broken(path, what, "is not an SQLite database (corrupt, or another kind of file)", fix)
    try:
        with sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30) as con:
            con.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.DatabaseError as exc:
        if "locked" in str(exc) or "busy" in str(exc):
            return  # in use by another process, which is not corruption: the library waits for it
        raise _broken(path, what, f"is damaged ({exc})", fix) from exc


def _broken(path: Path, what: str, problem: str, fix: str) -> TrackingError:
    return TrackingError(
        f"{what} {path} {problem}: nothing was written to it. Restore it from a backup, or move it aside "
        f"(a new one is then created); {fix}"
    )


def check_optuna_url(url: str) -> None:
    """`check_sqlite_file` for an Optuna study storage URL (sweep.storage.open_storage calls it)."""
    path = sqlite_path(url)
    if path is not None:
        check_sqlite_file(path, "Optuna study storage", "or set hydra.sweeper.storage to another one")
