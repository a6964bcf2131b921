"""Counting slots across workers: several sweep processes may share one study, and together they run exactly
n_trials trials. A trial is counted unless void (dermsweep.sweep.void); a process asks, claims a slot among the
first n_trials counted trials by start time, and gives back (voids, re-queues) what it may not run."""

from __future__ import annotations

import logging
import threading
from typing import Any

import optuna
from optuna.trial import TrialState

from ._links import optuna_private, study_report, trial_owner, void, warm_start_runs

__all__ = ["COUNTED", "Heartbeat", "Slots", "counted", "release", "running_with_heartbeat", "void"]
from ._options import format_duration

log = logging.getLogger(__name__)

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
WARM_START_ATTR = warm_start_runs.WARM_START_ATTR


def counted(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The trials that take a slot: finished or running, not void."""
    voided = void.numbers(study)
    return [t for t in study.get_trials(deepcopy=False, states=COUNTED) if t.number not in voided]


def _order(t: optuna.trial.FrozenTrial) -> tuple[float, int]:
    return (t.datetime_start.timestamp() if t.datetime_start else float("inf"), t.number)


class Slots:
    """The budget of one study as this process sees it: n_trials (None: unlimited) and a sweep-time timeout."""

    def __init__(self, n_trials: int | None, n_jobs: int, timeout: float | None) -> None:
        self.n_trials = n_trials
        self.n_jobs = n_jobs
        self.timeout = timeout
        self.stop_reason = ""

    def budget_left(self, study: optuna.Study, taken: list[optuna.trial.FrozenTrial]) -> int:
        """Trials this process may still launch (0: a budget is spent, and self.stop_reason says which)."""
        to_go = self.n_jobs if self.n_trials is None else self.n_trials - len(taken)
        if to_go <= 0:
            self.stop_reason = f"n_trials reached: {len(taken)} of {self.n_trials} trials finished or running"
            return 0
        if self.timeout is not None:
            spent = study_report.sweep_seconds(study)
            if spent >= self.timeout:
                finished = sum(1 for t in taken if t.state != TrialState.RUNNING)
                self.stop_reason = (
                    f"timeout: {format_duration(spent)} of sweep time spent, budget {format_duration(self.timeout)}"
                    f" (hydra.sweeper.timeout); {finished} trials finished, no new trial launched"
                )
                return 0
        return to_go

    def claim(self, study: optuna.Study, trial: optuna.Trial) -> bool:
        """True when ``trial`` is among the first n_trials counted trials (by start time): exactly n_trials
        trials run in total even if several processes asked at the same moment."""
        taken = counted(study)
        mine = next((t for t in taken if t.number == trial.number), None)
        if mine is None:
            return False
        if self.n_trials is None:
            return True
        key = _order(mine)
        ahead = sum(1 for t in taken if _order(t) < key)
        return ahead < self.n_trials

    def ask(self, study: optuna.Study, n: int, beat_every: float | None) -> list[optuna.Trial]:
        """Ask for up to ``n`` trials and keep those this process may run (the rest are given back)."""
        trials: list[optuna.Trial] = []
        heartbeats = optuna_private.heartbeat_enabled(study)
        for _ in range(n):
            t = study.ask()
            if heartbeats:  # at once: a RUNNING trial without any heartbeat would never go stale
                optuna_private.record_heartbeat(study, optuna_private.trial_id(t))
            trial_owner.claim(study, t, beat_every)
            if duplicate_warm_start(study, t):
                release(study, t, reason=void.DUPLICATE, requeue=False)
            elif self.claim(study, t):
                trials.append(t)
            else:
                release(study, t)
        return trials


def duplicate_warm_start(study: optuna.Study, trial: optuna.Trial) -> bool:
    """Two workers that opened a fresh study at the same moment may both have enqueued the warm start: a
    warm-start trial whose label an earlier counted trial already carries is such a copy."""
    label = optuna_private.frozen(study, trial).user_attrs.get(WARM_START_ATTR)
    if not label:
        return False
    return any(t.number < trial.number and t.user_attrs.get(WARM_START_ATTR) == label for t in counted(study))


def running_with_heartbeat(study: optuna.Study, taken: list[optuna.trial.FrozenTrial]) -> list[int]:
    """RUNNING trials that have a heartbeat record, i.e. that will either finish or go stale (a RUNNING
    trial without any heartbeat never goes stale in Optuna: not worth waiting for)."""
    running = {optuna_private.trial_id(t): t.number for t in taken if t.state == TrialState.RUNNING}
    return sorted(running[tid] for tid in optuna_private.with_heartbeat(study, running))


def release(study: optuna.Study, trial: optuna.Trial, reason: str = void.SURPLUS, requeue: bool = True) -> None:
    """Give back a trial that must not count: asked beyond n_trials ("surplus"), cut short by an
    interrupted sweep ("interrupted") or a second copy of a warm-start trial ("duplicate", not requeued). It
    is voided (not counted, not shown as failed) and its parameters, if any were chosen, go back to the queue
    (with its warm-start label) so the next sweep runs them first."""
    frozen = optuna_private.frozen(study, trial)
    queued = optuna_private.enqueued_params(frozen)
    queued.update(frozen.params)
    void.mark(study, trial.number, reason)
    study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    if queued and requeue:
        label = frozen.user_attrs.get(WARM_START_ATTR)
        study.enqueue_trial(queued, user_attrs={WARM_START_ATTR: label} if label else None)


class Heartbeat:
    """Records Optuna heartbeats for the trials of a batch while the launcher runs them (ask/tell has no
    built-in heartbeat, unlike study.optimize)."""

    def __init__(self, study: optuna.Study, trial_ids: list[int]) -> None:
        self.study = study
        self.trial_ids = trial_ids
        self.enabled = optuna_private.heartbeat_enabled(study)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Heartbeat:
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="optuna-heartbeat")
            self._thread.start()
        return self

    def _loop(self) -> None:
        interval = optuna_private.heartbeat_interval(self.study)
        while True:
            for tid in self.trial_ids:
                try:
                    optuna_private.record_heartbeat(self.study, tid)
                except Exception as exc:
                    log.debug("heartbeat of trial %s: %s", tid, exc)
            if self._stop.wait(interval):
                return

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
