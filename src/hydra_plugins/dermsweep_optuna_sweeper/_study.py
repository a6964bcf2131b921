"""Opening the sweep's study: its storage (with heartbeats), the sampler and pruner, the directions and metric names,
and the pruner's "auto" setting pinned once for every worker of the study."""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import optuna
from optuna.trial import TrialState

from ._links import optuna_private, optuna_storage, trial_link, void
from ._options import SweepSettingsError, safe_url
from .config import DEFAULT_PRUNER

log = logging.getLogger(__name__)

# Pruners whose "auto" setting Optuna resolves from the COMPLETE trials a process sees when it first prunes: the
# sweeper resolves it once and pins the value in the study's pruner spec (class name -> key).
AUTO_PRUNER_KEYS = {"HyperbandPruner": "max_resource", "SuccessiveHalvingPruner": "min_resource"}


def _auto_key(spec: Any) -> str | None:
    """The key of a pruner spec left at Optuna's "auto" that the sweeper pins, else None."""
    if not isinstance(spec, Mapping) or "_target_" not in spec:
        return None
    key = AUTO_PRUNER_KEYS.get(str(spec["_target_"]).rsplit(".", 1)[-1])
    return key if key is not None and spec.get(key, "auto") == "auto" else None


def with_pinned(spec: Any, stored: Any) -> Any:
    """``spec`` with the value an earlier sweep of the study pinned for its "auto" key, when ``stored`` (the study's
    pruner spec) is the same pruner with the same other settings; else ``spec`` itself."""
    key = _auto_key(spec)
    if key is None or not isinstance(stored, Mapping) or not isinstance(stored.get(key), int):
        return spec
    rest = {k: v for k, v in spec.items() if k != key}
    if {k: v for k, v in stored.items() if k != key} != rest:
        return spec
    return {**rest, key: stored[key]}


def resolve_auto(spec: Any, study: optuna.Study) -> int | None:
    """The value Optuna's "auto" would take now, from the study's COMPLETE trials: HyperbandPruner's max_resource
    = the largest last step + 1, SuccessiveHalvingPruner's min_resource = max(largest last step // 100, 1)."""
    key = _auto_key(spec)
    if key is None:
        return None
    steps = [
        t.last_step for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.last_step is not None
    ]
    if not steps:
        return None
    return max(steps) + 1 if key == "max_resource" else max(max(steps) // 100, 1)


def pin_pruner(study: optuna.Study, pruner_spec: Any) -> Any:
    """HyperbandPruner's max_resource / SuccessiveHalvingPruner's min_resource left at "auto": once a trial is
    COMPLETE, fix the value in the study's pruner spec (the one jobs, resumed sweeps and other workers read), so
    every process prunes with the same brackets and rungs instead of each resolving "auto" from whatever trials it
    sees first. Returns the spec now in force (``pruner_spec`` itself when nothing was pinned)."""
    key = _auto_key(pruner_spec)
    if key is None:
        return pruner_spec
    stored = study.user_attrs.get(trial_link.PRUNER_ATTR)
    spec = with_pinned(pruner_spec, json.loads(stored) if stored else None)  # another worker's pin
    if spec is pruner_spec:
        value = resolve_auto(pruner_spec, study)
        if value is None:
            return pruner_spec
        spec = {**pruner_spec, key: value}
        study.set_user_attr(trial_link.PRUNER_ATTR, json.dumps(spec))
    log.info('pruner: %s "auto" pinned to %s for this study', key, spec[key])
    pruner, _ = optuna_storage.instantiate_filtered(spec)
    study.pruner = pruner
    return spec


class StaleTrialCallback:
    """Called (via optuna.storages.fail_stale_trials) for each RUNNING trial whose worker died: voids it for the
    n_trials count and re-enqueues its parameters (RetryFailedTrialCallback)."""

    def __init__(self, max_retry: int | None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.warning("trial %d lost its heartbeat (dead worker): marked FAIL, parameters re-queued", trial.number)
        void.mark(study, trial.number, void.STALE)
        self.retry(study, trial)


@dataclass
class StudySettings:
    name: str
    storage_url: str | None
    directions: list[str]
    pruner_spec: Any
    metric_names: list[str] | None = None
    heartbeat_interval: int | None = 30
    grace_period: int | None = 120
    max_retry: int | None = 2


@dataclass
class OpenedStudy:
    study: optuna.Study
    created: bool  # this process created the study (it alone makes the parent run of a new study)
    pruner_spec: Any  # the pruner spec in force (an "auto" an earlier sweep pinned, kept)


def _storage(settings: StudySettings) -> Any:
    url = settings.storage_url
    rdb_kwargs: dict[str, Any] = {}
    if url and not url.startswith("journal:") and url not in ("memory", ":memory:") and settings.heartbeat_interval:
        rdb_kwargs = dict(
            heartbeat_interval=int(settings.heartbeat_interval),
            grace_period=settings.grace_period,
            heartbeat_stale_trial_callback=StaleTrialCallback(settings.max_retry),
        )
    return optuna_storage.open_storage(url, **rdb_kwargs)


def open_study(settings: StudySettings, sampler_spec: dict[str, Any], sampler_extra: dict[str, Any]) -> OpenedStudy:
    """Create the study, or join it. Exactly one process creates a study (the storage refuses a second study of
    the same name), which tells the parent run's maker without a pause."""
    pruner_spec = settings.pruner_spec
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study_storage = _storage(settings)
        # Probe the study first: a seeded sampler joining an existing study is offset by its trial count, so
        # a resumed sweep or a second worker does not replay the same random start-up points; a pruner
        # "auto" value an earlier sweep pinned is kept.
        offset = 0
        try:
            existing = optuna.load_study(study_name=settings.name, storage=study_storage)
            offset = len(existing.get_trials(deepcopy=False))
            stored = existing.user_attrs.get(trial_link.PRUNER_ATTR)
            pinned = with_pinned(pruner_spec, json.loads(stored) if stored else None)
            if pinned is not pruner_spec:
                key = _auto_key(pruner_spec)
                log.info("pruner: %s=%s, pinned by an earlier sweep of this study", key, pinned[key])
                pruner_spec = pinned
            exists = True
        except KeyError:
            exists = False
        pruner, dropped_p = optuna_storage.instantiate_filtered(pruner_spec)
        extra = dict(sampler_extra)
        if sampler_spec.get("seed") is not None:
            extra["seed"] = int(sampler_spec["seed"]) + offset
        sampler, dropped_s = optuna_storage.instantiate_filtered(sampler_spec, **extra)
    dropped_p = [k for k in dropped_p if pruner_spec.get(k) != DEFAULT_PRUNER.get(k)]  # inherited defaults
    for what, spec, dropped in (("sampler", sampler_spec, dropped_s), ("pruner", pruner_spec, dropped_p)):
        if dropped:
            log.warning("hydra.sweeper.%s: %s does not take %s: ignored", what, spec["_target_"], dropped)
    kwargs: dict[str, Any] = dict(
        study_name=settings.name,
        storage=study_storage,
        sampler=sampler,
        pruner=pruner or optuna.pruners.NopPruner(),
        directions=cast(list[Any], settings.directions),
    )
    created = False
    if not exists:
        try:
            study = optuna.create_study(**kwargs, load_if_exists=False)
            created = True
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it a moment ago
            pass
    if not created:
        study = optuna.create_study(**kwargs, load_if_exists=True)
    got = [d.name.lower() for d in study.directions]
    if got != settings.directions:
        raise SweepSettingsError(
            f"study {settings.name!r} in {safe_url(settings.storage_url)} has directions {got}, the sweep asks for "
            f"{settings.directions}: use another hydra.sweeper.study_name"
        )
    study.set_user_attr(trial_link.PRUNER_ATTR, json.dumps(pruner_spec))
    names = settings.metric_names
    if names and not study.metric_names and len(names) == len(settings.directions):
        # optuna-dashboard and the plots show these instead of "Objective 0"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(names)
    return OpenedStudy(study, created, pruner_spec)


def fresh(study: optuna.Study) -> bool:
    """No trial of the study has finished yet (a new study, or one whose first trials still run)."""
    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    voided = void.numbers(study)
    return not any(t.number not in voided for t in study.get_trials(deepcopy=False, states=finished))


def heartbeat_enabled(study: optuna.Study) -> bool:
    return optuna_private.heartbeat_enabled(study)
