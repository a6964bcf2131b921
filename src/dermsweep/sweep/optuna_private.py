"""Every use of Optuna's private API in dermsweep, in one place, so an Optuna upgrade touches one file.

The sweeper drives Optuna's ask/tell interface across processes, which needs a few things Optuna keeps private: a
study's storage (``Study._storage``), a trial's id in it (``Trial._trial_id``), suggesting from a distribution
object (``Trial._suggest``), whether the storage keeps heartbeats (``optuna.storages._heartbeat``), which trials
have a heartbeat row (``optuna.storages._rdb``), and the system attrs ``enqueue_trial`` and
``RetryFailedTrialCallback`` keep their bookkeeping in. tests/test_optuna_private.py fails when any other module
reaches for them. Written against Optuna 4.x/5.x.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)


def storage(study: Any) -> Any:
    """The storage a study reads and writes through (Optuna's cached wrapper around an RDB storage)."""
    return study._storage


def trial_id(trial: Any) -> int:
    """A trial's id in its storage (unique across studies; ``Trial`` and ``FrozenTrial`` alike)."""
    return int(trial._trial_id)


def attach(study: Any, trial_id: int) -> Any:
    """A live ``optuna.trial.Trial`` for a trial another process asked for (to report and prune)."""
    import optuna

    return optuna.trial.Trial(study, trial_id)


def frozen(study: Any, trial: Any) -> Any:
    """The stored state of a live trial (its user and system attrs as written so far)."""
    return storage(study).get_trial(trial_id(trial))


def suggest(trial: Any, name: str, distribution: Any) -> Any:
    """Suggest ``name`` from a distribution object (what the Hydra grammar yields), not a suggest_* call."""
    return trial._suggest(name, distribution)


def enqueued_params(frozen_trial: Any) -> dict[str, Any]:
    """The parameters ``study.enqueue_trial`` fixed for a trial (kept until the trial suggests them)."""
    return dict(frozen_trial.system_attrs.get("fixed_params", {}))


def retry_history(frozen_trial: Any) -> list[int]:
    """The numbers of the failed trials this one retries (RetryFailedTrialCallback's bookkeeping)."""
    return list(frozen_trial.system_attrs.get("retry_history", []))


def retry_system_attrs(frozen_trial: Any) -> dict[str, Any]:
    """The system attrs of a re-queued copy of ``frozen_trial``, as RetryFailedTrialCallback writes them."""
    system = {**frozen_trial.system_attrs, "retry_history": [*retry_history(frozen_trial), frozen_trial.number]}
    system.setdefault("failed_trial", frozen_trial.number)
    return system


def set_trial_user_attr(study: Any, trial_id: int, key: str, value: Any) -> None:
    """Write a user attr of any trial of the study (not only a live one of this process)."""
    storage(study).set_trial_user_attr(trial_id, key, value)


def set_failed(study: Any, trial_id: int) -> bool:
    """Mark a RUNNING trial FAIL; False when it had finished already. Raises UpdateFinishedTrialError when
    another process finished it first."""
    from optuna.trial import TrialState

    return bool(storage(study).set_trial_state_values(trial_id, TrialState.FAIL))


def heartbeat_enabled(study: Any) -> bool:
    """Does the study's storage keep Optuna heartbeats (an RDB storage opened with heartbeat_interval)?"""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return bool(is_heartbeat_enabled(storage(study)))


def heartbeat_interval(study: Any) -> float:
    return float(storage(study).get_heartbeat_interval())


def record_heartbeat(study: Any, trial_id: int) -> None:
    storage(study).record_heartbeat(trial_id)


def with_heartbeat(study: Any, trial_ids: Iterable[int]) -> set[int]:
    """Which of ``trial_ids`` have a heartbeat row (a RUNNING trial without one never goes stale in Optuna).
    Empty when the storage keeps no heartbeats or cannot be asked."""
    wanted = list(trial_ids)
    if not wanted or not heartbeat_enabled(study):
        return set()
    try:
        from optuna.storages._rdb import models

        # a study's storage is Optuna's cache around the RDBStorage, which alone has the session
        rdb = getattr(storage(study), "_backend", storage(study))
        session = rdb.scoped_session()
        try:
            rows = (
                session.query(models.TrialHeartbeatModel.trial_id)
                .filter(models.TrialHeartbeatModel.trial_id.in_(wanted))
                .all()
            )
        finally:
            rdb.scoped_session.remove()
        return {int(r[0]) for r in rows}
    except Exception as exc:
        log.debug("heartbeat query failed: %s", exc)
        return set()
