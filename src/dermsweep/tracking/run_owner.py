"""Who runs an MLflow run, and reaping the runs whose process died (SIGKILL, OOM killer, a lost machine).

A run's process claims it when it starts (`claim`): a tag `mlflow.dermsweep.owner.<host>.<pid>` with its owner record
(dermsweep.liveness), refreshed by a heartbeat while the run is RUNNING. A sweep's parent run is claimed by every
worker, so it has one such tag per worker process. `reap` finds RUNNING runs whose owners are all dead and marks
them KILLED with the reason (tags `dermsweep.status=killed`, `dermsweep.failure_reason`); `tracking.store.connect`
calls it, so the next command that opens the store tidies up, and `dermsweep runs --reap` does it on demand.
Runs without an owner tag (recorded before this existed, or by other tools) are never reaped.
"""

from __future__ import annotations

import logging
import re
import socket
from dataclasses import dataclass
from typing import Any

from .. import liveness
from . import run_format as rf

log = logging.getLogger(__name__)

_HEARTBEATS = liveness.Heartbeats()


@dataclass(frozen=True)
class Reaped:
    run_id: str
    name: str
    experiment_id: str
    role: str
    reason: str


def owner_key(owner: liveness.Owner) -> str:
    """The tag key of one owner: MLflow tag keys allow letters, digits, `_ - . / :` and spaces."""
    host = re.sub(r"[^\w.\-]", "_", owner.host)
    return f"{rf.OWNER}.{host}.{owner.pid}"


def claim(client: Any, run_id: str) -> None:
    """Record this process as an owner of the run and keep its heartbeat while the run is RUNNING."""
    owner = liveness.me()
    key = owner_key(owner)
    client.set_tag(run_id, key, owner.to_json())

    def beat() -> bool:
        if client.get_run(run_id).info.status != "RUNNING":
            return False  # ended (or reaped): nothing left to keep alive
        client.set_tag(run_id, key, owner.with_beat().to_json())
        return True

    _HEARTBEATS.add((str(client.tracking_uri), run_id, key), beat)


def owners(tags: dict[str, str]) -> list[liveness.Owner | None]:
    return [liveness.parse(v) for k, v in tags.items() if k.startswith((rf.OWNER + ".", rf.LEGACY_OWNER + "."))]


def death(tags: dict[str, str], stale_after: float = liveness.STALE_AFTER_S) -> str | None:
    """Why a run's owners are all dead (one sentence per owner), or None: alive, unknown, or never claimed."""
    found = owners(tags)
    if not found or any(o is None for o in found):
        return None
    reasons = [liveness.death(o, stale_after) for o in found if o is not None]
    if any(r is None for r in reasons):
        return None
    return "; ".join(r for r in reasons if r)


def running_runs(client: Any, experiment_ids: list[str] | None = None) -> list[Any]:
    ids = experiment_ids or [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    return list(client.search_runs(ids, filter_string="attributes.status = 'RUNNING'", max_results=5000))


def reap(
    client: Any, stale_after: float = liveness.STALE_AFTER_S, experiment_ids: list[str] | None = None
) -> list[Reaped]:
    """Mark KILLED every RUNNING run whose owners are all dead; returns what was reaped."""
    reaped = []
    for run in running_runs(client, experiment_ids):
        tags = run.data.tags
        why = death(tags, stale_after)
        if why is None:
            continue
        reason = f"marked KILLED by dermsweep on {socket.gethostname()}: {why}"
        client.set_tag(run.info.run_id, rf.STATUS, "killed")
        client.set_tag(run.info.run_id, rf.FAILURE_REASON, reason)
        client.set_terminated(run.info.run_id, status="KILLED")
        log.warning("MLflow: run %s (%s) marked KILLED: %s", run.info.run_id, run.info.run_name, why)
        reaped.append(
            Reaped(run.info.run_id, run.info.run_name or "", run.info.experiment_id, tags.get(rf.ROLE, ""), reason)
        )
    return reaped


def reap_quietly(client: Any) -> list[Reaped]:
    """`reap` for code paths that only pass by the store (connect): a failure is logged, never raised."""
    try:
        return reap(client)
    except Exception as exc:
        log.warning("MLflow: could not look for runs left RUNNING by dead processes: %s", exc)
        return []


def release(client: Any, run_id: str) -> None:
    """Stop this process's heartbeat for the run (it ended): no beat may land after its final status."""
    _HEARTBEATS.discard((str(client.tracking_uri), run_id, owner_key(liveness.me())))
