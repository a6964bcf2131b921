"""The one lifecycle of a recorded run (training, ensemble, evaluation): started RUNNING with its role, claimed by
this process (so a run whose process dies is reaped: tracking.run_owner), then either finished with a description
or ended with the reason it stopped; what was logged before is kept either way.

    with recorded_run(client, experiment_id, "trial-3-...", "trial", tags=...) as run:
        ...                                   # mlflow.log_* go to this run (MLflow's fluent API)
        run.finish("what the run found")      # the description; the run ends FINISHED when the block ends

An exception ends it: optuna.TrialPruned -> KILLED (pruned); KeyboardInterrupt, SIGTERM included
(tracking.stop_signal) -> KILLED with "stopped by SIGTERM" / "interrupted (Ctrl-C)"; anything else -> FAILED with
the error. The exception then goes on. When the store itself fails while recording that, the error raised names
the run and where the work was kept (`kept()`), instead of a second connection traceback.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import mlflow

from ..errors import TrackingError
from . import run_format as rf
from . import run_owner
from .stop_signal import stop_reason

log = logging.getLogger(__name__)

REASON_MAX = 5000  # MLflow tag values allow 8,000 characters
FINAL_WRITE_ATTEMPTS = 3  # the final status is the one write a reader must see: a busy store gets retries


@dataclass
class RecordedRun:
    run_id: str
    client: Any
    description: str | None = None
    tags: dict[str, str] = field(default_factory=dict)

    def finish(self, description: str, **tags: str) -> None:
        """The run's description (and any last tags), written when the block ends without an error."""
        self.description = description
        self.tags.update(tags)


@dataclass(frozen=True)
class Outcome:
    """How a run ended: MLflow's status, dermsweep's status tag and the reason (None when it finished)."""

    status: str
    label: str
    reason: str | None = None

    @classmethod
    def of(cls, exc: BaseException | None) -> Outcome:
        if exc is None:
            return cls("FINISHED", "finished")
        if type(exc).__name__ == "TrialPruned":  # optuna's, by name: tracking does not import optuna
            return cls("KILLED", "pruned", str(exc)[:REASON_MAX] or "pruned")
        if isinstance(exc, KeyboardInterrupt):
            return cls("KILLED", "killed", stop_reason(exc))
        return cls("FAILED", "failed", failure_reason(exc))


def failure_reason(exc: BaseException) -> str:
    """The error as a run's failure reason: its class and message, bounded."""
    return f"{exc.__class__.__name__}: {exc}"[:REASON_MAX]


@contextmanager
def recorded_run(
    client: Any,
    experiment_id: str,
    name: str,
    role: str,
    *,
    tags: dict[str, str] | None = None,
    parent_run_id: str | None = None,
    kept: Callable[[], str] | None = None,
    resume_run_id: str | None = None,
) -> Iterator[RecordedRun]:
    """Start, claim and end one run (see the module's docstring). `kept()` says where the work is if the store is
    lost while the run ends (e.g. "the best weights so far are at ..."). `resume_run_id`: reopen that stopped run
    instead (RUNNING again, its earlier failure reason dropped: the caller records how it had ended)."""
    if role not in rf.ROLES:
        raise ValueError(f"unknown run role {role!r}: one of {', '.join(rf.ROLES)}")
    if resume_run_id is not None:
        # Claimed before it is RUNNING again: its dead earlier process's owner record must not get it reaped.
        run_owner.claim(client, resume_run_id)
        stopped = client.get_run(resume_run_id)
        if rf.FAILURE_REASON in stopped.data.tags:
            client.delete_tag(resume_run_id, rf.FAILURE_REASON)
        # MLflow refuses to reopen a run outside the process's active experiment (an earlier run may have set another)
        mlflow.set_experiment(experiment_id=stopped.info.experiment_id)
    try:
        active = mlflow.start_run(
            run_id=resume_run_id,
            experiment_id=None if resume_run_id else experiment_id,
            run_name=None if resume_run_id else name,
            parent_run_id=None if resume_run_id else parent_run_id,
            tags={**(tags or {}), rf.ROLE: role, rf.STATUS: "running"},
            nested=mlflow.active_run() is not None,
        )
    except BaseException:
        if resume_run_id is not None:
            run_owner.release(client, resume_run_id)
        raise
    run = RecordedRun(active.info.run_id, client)
    try:
        run_owner.claim(client, run.run_id)  # host, pid and a heartbeat: a killed process's run is reaped
        yield run
        _write_end(run, Outcome.of(None))
    except BaseException as exc:
        _end_after(run, exc, kept)
        raise
    finally:
        run_owner.release(client, run.run_id)


def _end_after(run: RecordedRun, exc: BaseException, kept: Callable[[], str] | None) -> None:
    """Record why the run stopped; if the store fails doing so, raise a TrackingError that says where the work is."""
    outcome = Outcome.of(exc)
    try:
        _write_end(run, outcome)
    except Exception as tracking_exc:
        _forget_locally(outcome.status)
        where = kept() if kept is not None else ""
        cause = (outcome.reason or outcome.label).splitlines()[0][:300]
        raise TrackingError(
            f"run {run.run_id} stopped ({cause}), then lost the MLflow tracking store while marking it "
            f"{outcome.status} ({tracking_exc.__class__.__name__}: {_one_line(tracking_exc)})"
            f"{'; ' + where if where else ''}"
        ) from exc


def _write_end(run: RecordedRun, outcome: Outcome) -> None:
    """The status tags, then MLflow's status; checked by reading it back (another process may have marked the
    run meanwhile, e.g. a reaper that took a slow heartbeat for a dead one), retried while the store is busy.
    Through the client, never the fluent API: with no active run, `mlflow.set_tags` would start a new one."""
    from mlflow.entities import RunTag

    tags = {rf.STATUS: outcome.label}
    if outcome.reason is not None:
        tags[rf.FAILURE_REASON] = outcome.reason
    if outcome.status == "FINISHED":
        tags.update(run.tags)
        if run.description is not None:
            tags[rf.DESCRIPTION] = run.description
    run.client.log_batch(run.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
    active = mlflow.active_run()
    if active is not None and active.info.run_id == run.run_id:
        mlflow.end_run(outcome.status)  # pops the run from MLflow's active-run stack, then writes the status
    else:
        run.client.set_terminated(run.run_id, status=outcome.status)
    for attempt in range(FINAL_WRITE_ATTEMPTS):
        try:
            stored = run.client.get_run(run.run_id)
            if stored.info.status == outcome.status and stored.data.tags.get(rf.STATUS) == outcome.label:
                return
            log.warning(
                "MLflow: run %s read back as %s (%s), not %s: written again",
                run.run_id,
                stored.info.status,
                stored.data.tags.get(rf.STATUS),
                outcome.status,
            )
            run.client.log_batch(run.run_id, tags=[RunTag(k, v) for k, v in tags.items()])
            run.client.set_terminated(run.run_id, status=outcome.status)
        except Exception:
            if attempt == FINAL_WRITE_ATTEMPTS - 1:
                raise
            time.sleep(1.0 + attempt)


def _forget_locally(status: str) -> None:
    """Drop the run from MLflow's active-run stack even though the store cannot be told (end_run pops first)."""
    if mlflow.active_run() is None:
        return
    try:
        mlflow.end_run(status)
    except Exception:
        pass  # popped before the write that failed


def _one_line(exc: BaseException) -> str:
    text = str(getattr(exc, "message", None) or exc).strip()
    return (text.splitlines() or [type(exc).__name__])[0][:300]
