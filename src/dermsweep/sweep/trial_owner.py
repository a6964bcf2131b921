"""Who runs an Optuna trial, and failing the trials whose sweep process died.

Optuna's heartbeat (RDB storages) lets any sweep find a dead sweep's trials after `grace_period`; a journal file
has no heartbeat, so a killed sweep left its trial RUNNING, and counted, for ever. Here the sweeper claims every
trial it asks for: the trial's user attr `dermsweep.owner` holds an owner record (dermsweep.liveness) with the
trial's id (so a re-queued copy, which inherits user attrs, is not mistaken for the dead one), refreshed every
`heartbeat_interval` where Optuna keeps no heartbeat. Before each batch, `fail_dead` fails every RUNNING trial whose
owner is dead (at once on the owner's machine, after `grace_period` without heartbeat elsewhere): voided, so it is
not counted (`void=killed` in the parent run's trials.csv), its reason in `dermsweep.failure_reason`, and its
parameters re-queued (at most `max_retry` times) so a later trial runs them.
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from .. import liveness
from ..tracking import run_format as rf
from .trial_link import VOID_PREFIX

log = logging.getLogger(__name__)

OWNER_ATTR = rf.OWNER  # a trial user attr: the owner record of the sweep process that asked for the trial
_HEARTBEATS: dict[float, liveness.Heartbeats] = {}


def _persistent(storage: Any) -> bool:
    import optuna

    return not isinstance(storage, optuna.storages.InMemoryStorage)


def claim(study: Any, trial: Any, beat_every: float | None) -> None:
    """Record this process as the owner of `trial`; `beat_every` seconds, refresh that record while it runs
    (None: the storage keeps its own heartbeat)."""
    from optuna.trial import TrialState

    storage = study._storage
    if not _persistent(storage):
        return
    trial_id = trial._trial_id
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
    if owner is None or extra.get("trial_id") != trial._trial_id:
        return None
    if stale_after is None or not extra.get("beat_every"):
        stale_after = math.inf
    return liveness.death(owner, stale_after)


def fail_dead(study: Any, stale_after: float | None, max_retry: int | None) -> list[int]:
    """Fail, void and re-queue the RUNNING trials whose owner is dead; returns their numbers."""
    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState

    storage = study._storage
    if not _persistent(storage):
        return []
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        why = death(trial, stale_after)
        if why is None:
            continue
        # voided and explained first: once FAIL, a trial takes no more writes, and no other worker may count it
        study.set_user_attr(f"{VOID_PREFIX}{trial.number}", "killed")
        try:
            storage.set_trial_user_attr(trial._trial_id, rf.FAILURE_REASON, f"killed: {why}")
            if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
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

    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if not trial.params or (max_retry is not None and len(history) > max_retry):
        return False
    keep = {k: v for k, v in trial.user_attrs.items() if k not in (OWNER_ATTR, rf.FAILURE_REASON)}
    system = {**trial.system_attrs, "retry_history": history}
    system.setdefault("failed_trial", trial.number)
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
