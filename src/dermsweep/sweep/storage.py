"""Optuna storages and component specs, shared by the sweeper (which creates the study) and the jobs (which load
it to report and prune)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def open_storage(url: str | None, **rdb_kwargs: Any) -> Any:
    """An Optuna storage for ``url``; shared settings for the sweeper and for jobs.

    - ``None`` / ``"memory"``: InMemoryStorage (one process only).
    - ``journal:///abs/file.log`` or ``journal://rel/file.log``: JournalStorage(JournalFileBackend).
    - anything else: RDBStorage. For SQLite: WAL journal mode (set once, persistent in the file) and a 60 s busy
      timeout, so several processes can share the file without "database is locked".
    """
    import optuna

    if url is None or url in ("", "memory", ":memory:"):
        return optuna.storages.InMemoryStorage()
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = url[len("journal://") :] if url.startswith("journal://") else url[len("journal:") :]
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:"):
        from hydra.errors import CompactHydraException

        from ..errors import DermsweepError
        from ..tracking.store_files import check_optuna_url

        try:  # a corrupt or emptied file: left as it is, and one line from Hydra (a compact error), no traceback
            check_optuna_url(url)
        except DermsweepError as exc:
            raise CompactHydraException(f"error: {exc}") from None
        _sqlite_prepare(url)
        engine_kwargs = {"connect_args": {"timeout": 60}}
    last: Exception | None = None
    for attempt in range(5):  # concurrent first-time schema creation can race; retry
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **rdb_kwargs)
        except Exception as exc:
            last = exc
            time.sleep(0.5 * (attempt + 1))
    assert last is not None
    raise last


def absolute_url(url: str | None, base: str | Path | None = None) -> str | None:
    """``url`` with a relative SQLite or journal file path made absolute against ``base`` (default: this process's
    working directory, where Optuna would open it). The sweeper records and hands out the absolute URL, so a job
    that changes directory and a reaper started elsewhere open the same file."""
    if not url:
        return url
    for prefix in ("sqlite:///", "journal://", "journal:"):
        if url.startswith(prefix):
            path = url[len(prefix) :]
            if not path or path.startswith((":memory:", "/")) or (prefix == "journal:" and path.startswith("//")):
                return url
            absolute = (Path(base) if base is not None else Path.cwd()) / path
            return f"{prefix}{absolute}" if prefix == "sqlite:///" else f"journal://{absolute}"
    return url


def local_file(url: str) -> Path | None:
    """The file of a SQLite or journal storage URL (None for a server database or memory)."""
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///") :]
        return None if not path or path.startswith(":memory:") else Path(path)
    if url.startswith("journal:"):
        return Path(url[len("journal://") :] if url.startswith("journal://") else url[len("journal:") :])
    return None


def _sqlite_prepare(url: str) -> None:
    import sqlite3

    path = url.split("sqlite:///", 1)[-1] if url.startswith("sqlite:///") else ""
    if not path or path.startswith(":memory:"):
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    try:
        con = sqlite3.connect(path, timeout=60)
        try:
            con.execute("PRAGMA journal_mode=WAL")
        finally:
            con.close()
    except sqlite3.Error as exc:  # not fatal: the busy timeout still applies
        log.warning("could not set WAL on %s: %s", path, exc)


def instantiate_filtered(spec: Any, **extra: Any) -> Any:
    """Instantiate ``{_target_: ..., **kwargs}`` keeping only the kwargs the target accepts (so switching
    ``_target_`` from TPESampler to RandomSampler does not fail on TPE-only keys). Returns (object, dropped)."""
    import importlib
    import inspect

    if spec is None:
        return None, []
    spec = dict(spec)
    target = spec.pop("_target_")
    module, _, name = target.rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    spec.update(extra)
    params = inspect.signature(cls).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        kept = spec
    else:
        kept = {k: v for k, v in spec.items() if k in params}
    dropped = sorted(set(spec) - set(kept))
    return cls(**kept), dropped
