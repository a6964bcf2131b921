"""Is the process that owns a run (or an Optuna trial) still alive? The one rule, for MLflow runs and trials alike.

An owner is recorded as a small JSON record when the work starts: host name, the machine's identity (kernel boot id
and PID namespace, so a reboot or another container sharing the host name is not mistaken for this machine), the
process id and its start time (so a recycled pid is not mistaken for the owner), and `beat`, the last heartbeat,
refreshed by a background thread while the work runs.

The verdict, from any process:
- on the owner's machine: dead as soon as the pid is gone or now belongs to a process started later (exact, instant);
- from another machine: dead when the owner's heartbeat is older than `stale_after` seconds (a process that cannot
  be inspected from here is presumed alive until then);
- a record that cannot be read: never dead (nothing is reaped on a guess).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HEARTBEAT_S = 60.0  # how often a running owner refreshes its record's `beat`
STALE_AFTER_S = 900.0  # default: no heartbeat for this long from another machine = dead


@dataclass(frozen=True)
class Owner:
    host: str
    machine: str  # boot id + PID namespace: equal only for processes that can see each other's pids
    pid: int
    started: str  # the process's start time as the kernel counts it ("" where it cannot be read)
    beat: float  # time.time() of the last heartbeat

    def to_json(self, **extra: Any) -> str:
        """The record as JSON; `extra` keys (e.g. the trial it was made for) ride along and are ignored by parse."""
        return json.dumps({**asdict(self), **extra}, sort_keys=True)

    def with_beat(self, now: float | None = None) -> Owner:
        return Owner(self.host, self.machine, self.pid, self.started, time.time() if now is None else now)

    @property
    def label(self) -> str:
        return f"process {self.pid} on {self.host}"


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


def _machine() -> str:
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        pidns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pidns = ""
    return f"{boot}/{pidns}" if boot else ""


def _started(pid: int) -> str:
    """Start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat); "" if unknown or gone."""
    stat = _read(f"/proc/{pid}/stat")
    if not stat:
        return ""
    # the command name (field 2) may hold spaces and parentheses: split after its closing one
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else ""


def me() -> Owner:
    """This process as an owner, with a fresh heartbeat."""
    pid = os.getpid()
    return Owner(socket.gethostname(), _machine(), pid, _started(pid), time.time())


def parse(text: str | None) -> Owner | None:
    """An owner from its JSON record; None for anything else (nothing is reaped on a guess)."""
    try:
        d = json.loads(text or "")
        return Owner(str(d["host"]), str(d["machine"]), int(d["pid"]), str(d["started"]), float(d["beat"]))
    except (ValueError, TypeError, KeyError):
        return None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    # a zombie (killed, not yet waited for by its parent) has exited all the same
    stat = _read(f"/proc/{pid}/stat")
    return not stat or stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def death(owner: Owner, stale_after: float = STALE_AFTER_S, now: float | None = None) -> str | None:
    """Why `owner` is dead, as a sentence; None while it is (or may be) alive."""
    here = me()
    if owner.machine and owner.machine == here.machine and owner.host == here.host:
        if not _pid_alive(owner.pid):
            return f"{owner.label} died (its pid is gone)"
        if owner.started and _started(owner.pid) not in ("", owner.started):
            return f"{owner.label} died (its pid now belongs to a newer process)"
        return None
    silent = (time.time() if now is None else now) - owner.beat
    if silent > stale_after:
        return f"{owner.label} presumed dead: no heartbeat for {silent:.0f} s (limit {stale_after:.0f} s)"
    return None


class Heartbeats:
    """One daemon thread per process that calls each registered beat function every `interval` seconds until the
    function returns False (its work is over) or is unregistered. A failing beat is logged and retried."""

    def __init__(self, interval: float = HEARTBEAT_S) -> None:
        self.interval = interval
        self._beats: dict[Hashable, Callable[[], bool]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def add(self, key: Hashable, beat: Callable[[], bool]) -> None:
        with self._lock:
            self._beats[key] = beat
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, daemon=True, name="dermsweep-heartbeats")
                self._thread.start()

    def discard(self, key: Hashable) -> None:
        with self._lock:
            self._beats.pop(key, None)

    def _loop(self) -> None:
        while not self._wake.wait(self.interval):
            with self._lock:
                beats = list(self._beats.items())
            for key, beat in beats:
                try:
                    keep = beat()
                except Exception as exc:  # a store that does not answer now may answer at the next beat
                    log.debug("heartbeat %s: %s", key, exc)
                    keep = True
                if not keep:
                    self.discard(key)
