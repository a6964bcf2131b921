"""One promotion at a time: plan, register and alias move under an exclusive lock beside a local store.

Two `dermsweep promote` processes started at the same instant otherwise both plan against the same champion, both
register and both move `@champion` ("first champion" twice). A local SQLite store gets a lock file beside its
database (`mlflow.db.promote.lock`, fcntl.flock: released by the kernel when the process dies, so a killed
promotion never blocks the next one). A remote store cannot be locked from here: promotion re-reads `@champion`
after registering and gives up if another promotion moved it meanwhile (compare-and-set, promotion.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from .ranking import RegistryError

WAIT_S = 600.0  # another promotion registers a model in seconds; this long means something is stuck
POLL_S = 0.2


def lock_path(registry_uri: str) -> Path | None:
    """The lock file of a local SQLite store, None for stores this process cannot lock (servers, other DBs)."""
    if urlparse(registry_uri).scheme != "sqlite":
        return None
    db = Path(registry_uri.removeprefix("sqlite:///"))
    return db.with_name(db.name + ".promote.lock")


@contextlib.contextmanager
def promotion_lock(registry_uri: str, wait_s: float = WAIT_S) -> Iterator[Path | None]:
    """Hold the store's promotion lock (yields its path), or nothing for a remote store."""
    path = lock_path(registry_uri)
    if path is None:
        yield None
        return
    import fcntl

    try:
        handle = open(path, "a+")  # noqa: SIM115  # held for the whole block
    except OSError as exc:
        raise RegistryError(
            f"cannot create the promotion lock {path} ({exc.strerror}): promotion writes to this store, so it "
            "must be writable"
        ) from exc
    with handle:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RegistryError(
                        f"another promotion has held {path} for over {wait_s:.0f} s; wait for it, or end the "
                        "process that holds it (`fuser` names it)"
                    ) from None
                time.sleep(POLL_S)
        try:
            yield path
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
