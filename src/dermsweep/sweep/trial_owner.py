"""Who runs an Optuna trial, and failing the trials whose sweep process died.

Optuna's heartbeat (RDB storages) lets any sweep find a dead sweep's trials after `grace_period`; a journal file
has no heartbeat, so a killed sweep left its trial RUNNING, and counted, for ever. Here the sweeper claims every
trial it asks for: the trial's user attr `dermsweep.owner` holds an owner record (dermsweep.liveness) with the
trial's id (so a re-queued copy, which inherits user attrs, is not mistaken for the dead one), refreshed every
`heartbeat_interval` where Optuna keeps no heartbeat. Before each batch, `fail_dead` fails every RUNNING trial whose
owner is dead (at once on the owner's machine, after `grace_period` without heartbeat elsewhere): voided, so it is
not counted (`void=killed` in the parent run's trials.csv), its reason in `dermsweep.failure_reason`, and its
parameters re-queued (at most `max_retry` times) so a later trial runs them.

A trial `study.ask()` created whose worker died before it could claim it has no owner record (and, on a journal
file, no heartbeat either): nothing would ever fail it. `fail_dead` fails such a trial once it has been RUNNING
unclaimed for `UNCLAIMED_AFTER_S` (the sweeper claims within a second of asking, so only a dead worker leaves one).
"""

from __future__ import annotations

import datetime
import json
import logging
import math
from typing import Any

from .. import liveness
from ..tracking import run_format as rf
from . import optuna_private, void

log = logging.getLogger(__name__)

OWNER_ATTR = rf.OWNER  # a trial user attr: the owner record of the sweep process that asked for the trial
# How long a trial may stay RUNNING without an owner record before it counts as its dead worker's: generous, since
# the asking machine's clock stamped its start and the reaper's clock reads it.
UNCLAIMED_AFTER_S = 600.0
_HEARTBEATS: dict[float, liveness.Heartbeats] = {}


def _persistent(storage: Any) -> bool:
    import optuna

    return not isinstance(storage, optuna.storages.InMemoryStorage)


def claim(study: Any, trial: Any, beat_every: float | None) -> None:
    """Record this process as the owner of `trial`; `beat_every` seconds, refresh that record while it runs
    (None: the storage keeps its own heartbeat)."""
    from optuna.trial import TrialState

    storage = optuna_private.storage(study)
    if not _persistent(storage):
        return
    trial_id = optuna_private.trial_id(trial)
    owner = liveness.me()
    # beat_every rides along: a record that is never refreshed must not look stale to a reaper elsewhere
    extra = {"trial_id": trial_id, "beat_every": float(beat_every or 0)}
    storage.set_trial_user_attr(trial_id, OWNER_ATTR, owner.to_json(**extra))
    if not beat_every:
        return

    def beat() -> bool:
        if storage.get_trial(trial_id).state != TrialState.RUNNING:
            return False
        storage.set_trial_user_attr(trial_id, OWNER_ATTR, owner.with_beat().to_json(**extra))
        return True

    beats = _HEARTBEATS.setdefault(float(beat_every), liveness.Heartbeats(float(beat_every)))
    beats.add((id(storage), trial_id), beat)


def stale_limit(beat_every: float | None, grace_period: float | None) -> float | None:
    """How old an owner record's heartbeat may get before its trial is failed: the sweeper's grace_period (else
    twice the interval, Optuna's rule); None when the records carry no heartbeat (the storage has its own)."""
    if not beat_every:
        return None
    return float(grace_period if grace_period else 2 * beat_every)


def death(trial: Any, stale_after: float | None) -> str | None:
    """Why the RUNNING `trial`'s owner is dead, or None (alive, unknown, or a record inherited from another trial).
    stale_after=None: only a verdict from the owner's machine counts (the storage's own heartbeat does the rest)."""
    record = trial.user_attrs.get(OWNER_ATTR)
    try:
        extra = json.loads(record) if isinstance(record, str) else {}
    except ValueError:
        extra = {}
    owner = liveness.parse(record)
    if owner is None or extra.get("trial_id") != optuna_private.trial_id(trial):
        return None
    if stale_after is None or not extra.get("beat_every"):
        stale_after = math.inf
    return liveness.death(owner, stale_after)


def unclaimed(trial: Any, after_s: float = UNCLAIMED_AFTER_S, now: datetime.datetime | None = None) -> str | None:
    """Why the RUNNING `trial` counts as abandoned before its worker claimed it, or None (claimed, or asked too
    recently to tell)."""
    if OWNER_ATTR in trial.user_attrs or trial.datetime_start is None:
        return None
    age = ((now or datetime.datetime.now()) - trial.datetime_start).total_seconds()
    if age < after_s:
        return None
    return f"asked {age:.0f} s ago and never claimed (its worker died between asking and claiming)"


def fail_dead(study: Any, stale_after: float | None, max_retry: int | None) -> list[int]:
    """Fail, void and re-queue the RUNNING trials whose owner is dead, or that no worker ever claimed; returns
    their numbers."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    if not _persistent(optuna_private.storage(study)):
        return []
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why, reason = death(trial, stale_after), void.KILLED
        if why is None:
            why, reason = unclaimed(trial, max(UNCLAIMED_AFTER_S, stale_after or 0.0)), void.UNCLAIMED
        if why is None:
            continue
        tid = optuna_private.trial_id(trial)
        # voided and explained first: once FAIL, a trial takes no more writes, and no other worker may count it
        void.mark(study, trial.number, reason)
        try:
            optuna_private.set_trial_user_attr(study, tid, rf.FAILURE_REASON, f"{reason}: {why}")
            if not optuna_private.set_failed(study, tid):
                continue
        except UpdateFinishedTrialError:  # another worker failed it first, and re-queued it
            continue
        requeued = _requeue(study, trial, max_retry)
        log.warning(
            "trial %d: %s; marked FAIL (not counted)%s",
            trial.number,
            why,
            ", parameters re-queued" if requeued else f", not retried (max_retry={max_retry})",
        )
        failed.append(trial.number)
    return failed


def _requeue(study: Any, trial: Any, max_retry: int | None) -> bool:
    """Optuna's RetryFailedTrialCallback rule (failed_trial, retry_history, max_retry), without carrying over the
    dead trial's owner record and failure reason."""
    import optuna

    system = optuna_private.retry_system_attrs(trial)
    enqueued = optuna_private.enqueued_params(trial)
    if not (trial.params or enqueued) or (max_retry is not None and len(system["retry_history"]) > max_retry):
        return False
    keep = {k: v for k, v in trial.user_attrs.items() if k not in (OWNER_ATTR, rf.FAILURE_REASON)}
    if not trial.params:  # asked from the queue and never claimed: its enqueued configuration goes back
        study.enqueue_trial(enqueued, user_attrs=keep or None)
        return True
    study.add_trial(
        optuna.create_trial(
            state=optuna.trial.TrialState.WAITING,
            params=trial.params,
            distributions=trial.distributions,
            user_attrs=keep,
            system_attrs=system,
        )
    )
    return True
