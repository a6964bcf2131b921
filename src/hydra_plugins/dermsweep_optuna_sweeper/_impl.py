"""Implementation of the dermsweep Optuna sweeper (ask/tell loop over a Hydra launcher).

Grammar (same semantics as facebookresearch/hydra's hydra-optuna-sweeper):
    choice(a, b, c)                 -> CategoricalDistribution
    range(1, 10) / range(1, 10, 2)  -> IntDistribution(1, 10, step)       (upper bound INCLUDED, like upstream)
    range(0, 1, step=0.1)           -> FloatDistribution(0, 1, step=0.1)
    shuffle(range(...))             -> CategoricalDistribution of the range's values
    interval(0.1, 1)                -> FloatDistribution(0.1, 1)  (Hydra parses interval bounds as floats)
    tag(log, interval(1e-5, 1e-2))  -> FloatDistribution(1e-5, 1e-2, log=True)
    tag(log, int, interval(8, 512)) -> IntDistribution(8, 512, log=True)  (dermsweep addition: tag "int")
    a plain value                   -> fixed: passed to every job unchanged
    ~key, ~key=value                -> a delete override, passed to every job unchanged
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import re
import threading
import time
import warnings
from collections.abc import Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any, cast

import optuna
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import (
    ChoiceSweep,
    IntervalSweep,
    Override,
    RangeSweep,
    Transformer,
)
from hydra.core.plugins import Plugins
from hydra.core.utils import JobReturn, JobStatus
from hydra.plugins.launcher import Launcher
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError
from optuna.distributions import (
    BaseDistribution,
    CategoricalChoiceType,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from . import _samplers, _warm_start
from ._links import optuna_storage, parent_run, trial_link, trial_owner
from .config import DEFAULT_VALIDATE

log = logging.getLogger(__name__)

COUNTED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)
VOID_PREFIX = trial_link.VOID_PREFIX
# Top-level keys of dermsweep's training config that its pre-flight (dermsweep.training.config.validate) reads
DERMSWEEP_TOP_KEYS = ("data", "model", "augment", "schedule", "class_weight", "trainer", "objective", "tracking")
# Study user attr: the warm start was enqueued (JSON: how many, from where), so a resume or a second worker does
# not enqueue it again.
WARM_STARTED_ATTR = "dermsweep.warm_start.enqueued"
# Pruners whose "auto" setting Optuna resolves from the COMPLETE trials a process sees when it first prunes: the
# sweeper resolves it once and pins the value in the study's pruner spec (class name -> key).
AUTO_PRUNER_KEYS = {"HyperbandPruner": "max_resource", "SuccessiveHalvingPruner": "min_resource"}
_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(h|hours?|m|min|minutes?|s|sec|seconds?)", re.IGNORECASE)


def parse_timeout(value: Any) -> float | None:
    """hydra.sweeper.timeout in seconds: a number of seconds (Optuna's unit) or a string such as "90m", "3h",
    "1h30m", "45s". null = no time budget."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"hydra.sweeper.timeout={value!r}: give seconds or a duration such as 90m, 3h, 1h30m")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = str(value).strip()
        try:
            seconds = float(text)
        except ValueError:
            parts = _DURATION.findall(text)
            if not parts or _DURATION.sub("", text).strip():
                raise ValueError(
                    f"hydra.sweeper.timeout={value!r}: give seconds or a duration such as 90m, 3h, 1h30m"
                ) from None
            unit_s = {"h": 3600.0, "m": 60.0, "s": 1.0}
            seconds = sum(float(n) * unit_s[u[0].lower()] for n, u in parts)
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"hydra.sweeper.timeout={value!r}: must be more than 0 (null = no time budget)")
    return seconds


def format_duration(seconds: float) -> str:
    """3725 -> "1h02m05s"; 59.5 -> "59.5s"."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(round(seconds))
    h, rest = divmod(whole, 3600)
    m, sec = divmod(rest, 60)
    return f"{h}h{m:02d}m{sec:02d}s" if h else f"{m}m{sec:02d}s"


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


def _quote(value: str) -> str:
    """A Hydra override value that parses back to exactly ``value``."""
    # Hydra's quoted strings: only quotes (and backslashes right before them) are escaped
    return "'" + value.replace("'", "\\'") + "'"


def env_overrides(env: dict[str, str]) -> tuple[str, ...]:
    # ++ : add or replace (the user's config may already have hydra.job.env_set entries)
    return tuple(f"++hydra.job.env_set.{k}={_quote(v)}" for k, v in env.items())


# ----------------------------------------------------------------------------------------------- grammar
def create_distribution_from_override(override: Override) -> Any:
    """An Optuna distribution for a sweep override, or the value string for a plain (fixed) override."""
    if not override.is_sweep_override():
        return override.get_value_element_as_str()

    value = override.value()
    if override.is_choice_sweep():
        if not isinstance(value, ChoiceSweep):  # glob(...) needs the config's keys: not a search space
            raise NotImplementedError(f"{override.input_line} is not supported by the Optuna sweeper")
        choices: list[CategoricalChoiceType] = []
        for x in override.sweep_iterator(transformer=Transformer.encode):
            assert isinstance(x, (str, int, float, bool, type(None)))
            choices.append(x)
        return CategoricalDistribution(choices)

    if override.is_range_sweep():
        assert isinstance(value, RangeSweep)
        assert value.start is not None and value.stop is not None
        if value.shuffle:
            shuffled: list[Any] = list(override.sweep_iterator(transformer=Transformer.encode))
            return CategoricalDistribution(shuffled)
        if any(isinstance(v, float) for v in (value.start, value.stop, value.step)):
            return FloatDistribution(value.start, value.stop, step=value.step)
        return IntDistribution(int(value.start), int(value.stop), step=int(value.step))

    if override.is_interval_sweep():
        assert isinstance(value, IntervalSweep)
        assert value.start is not None and value.end is not None
        log_scale = "log" in value.tags
        # Hydra parses interval bounds as floats; tag "int" asks for integers (an addition to upstream's grammar)
        if "int" in value.tags or (isinstance(value.start, int) and isinstance(value.end, int)):
            return IntDistribution(int(value.start), int(value.end), log=log_scale)
        return FloatDistribution(float(value.start), float(value.end), log=log_scale)

    raise NotImplementedError(f"{override.input_line} is not supported by the Optuna sweeper (glob sweep?)")


def parse_search_space(
    params: MutableMapping[str, Any] | None, arguments: Sequence[str], config_loader: Any = None
) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
    """(search space, fixed overrides) from the sweeper's ``params`` and the command line (which wins)."""
    lines = [f"{k}={v}" for k, v in (params or {}).items()]
    lines.extend(arguments)
    parser = OverridesParser.create(config_loader=config_loader)
    space: dict[str, BaseDistribution] = {}
    fixed: dict[str, str] = {}
    for override in parser.parse_overrides(lines):
        key = override.get_key_element()
        if override.is_delete():  # "~key" or "~key=value": kept as written (key "~key")
            space.pop(key[1:], None)
            fixed[key] = str(override.input_line)
            continue
        dist = create_distribution_from_override(override)
        space.pop(key, None)
        fixed.pop(key, None)
        if isinstance(dist, BaseDistribution):
            space[key] = dist
        else:
            fixed[key] = dist
    return space, fixed


def override_line(key: str, value: str) -> str:
    """The override for a fixed entry of parse_search_space (a delete override is stored as written)."""
    return value if key.startswith("~") else f"{key}={value}"


def distributions_from_search_space(search_space: Mapping[str, Any]) -> dict[str, BaseDistribution]:
    """hydra-optuna-sweeper's deprecated ``search_space`` form: {key: {type, low, high, step, log, choices}}."""
    out: dict[str, BaseDistribution] = {}
    for key, spec in search_space.items():
        spec = dict(spec)
        kind = str(getattr(spec.get("type"), "name", spec.get("type")))
        log_scale, step = bool(spec.get("log", False)), spec.get("step")
        if kind == "categorical":
            out[str(key)] = CategoricalDistribution(list(spec["choices"]))
        elif kind == "int":
            out[str(key)] = IntDistribution(
                int(spec["low"]), int(spec["high"]), log=log_scale, step=1 if log_scale or step is None else int(step)
            )
        elif kind == "float":
            out[str(key)] = FloatDistribution(
                float(spec["low"]),
                float(spec["high"]),
                log=log_scale,
                step=None if log_scale or step is None else float(step),
            )
        else:
            raise NotImplementedError(f"hydra.sweeper.search_space.{key}: type {kind!r} is not int|float|categorical")
    return out


# ----------------------------------------------------------------------------------------------- helpers
def _directions(direction: Any) -> list[str]:
    if isinstance(direction, str) or hasattr(direction, "name"):
        dirs = [str(getattr(direction, "name", direction))]
    else:
        dirs = [str(getattr(d, "name", d)) for d in direction]
    for d in dirs:
        if d.lower() not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction: {d!r} is not maximize|minimize")
    return [d.lower() for d in dirs]


def default_directions(config: Any) -> tuple[list[str], str]:
    """Directions when hydra.sweeper.direction is null: the task config's objective.direction (dermsweep's
    train.py has one), else hydra-optuna-sweeper's default, minimize. (directions, where they came from)"""
    wanted = OmegaConf.select(config, "objective.direction", default=None)
    if isinstance(wanted, str) or OmegaConf.is_list(wanted):
        return _directions(_to_container(wanted)), "objective.direction"
    return ["minimize"], "hydra-optuna-sweeper's default"


def _to_container(x: Any) -> Any:
    if isinstance(x, DictConfig) or OmegaConf.is_config(x):
        return OmegaConf.to_container(x, resolve=True)
    return x


def _safe_url(url: str | None) -> str:
    """Storage URL without a password, for tags and logs."""
    if not url:
        return "memory"
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


class _Heartbeat:
    """Records Optuna heartbeats for the trials of a batch while the launcher runs them (ask/tell has no
    built-in heartbeat, unlike study.optimize)."""

    def __init__(self, storage: Any, trial_ids: list[int]) -> None:
        self.storage = storage
        self.trial_ids = trial_ids
        self.enabled = optuna.storages._heartbeat.is_heartbeat_enabled(storage)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Heartbeat:
        if self.enabled:
            self._thread = threading.Thread(target=self._loop, daemon=True, name="optuna-heartbeat")
            self._thread.start()
        return self

    def _loop(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while True:
            for tid in self.trial_ids:
                try:
                    self.storage.record_heartbeat(tid)
                except Exception as exc:
                    log.debug("heartbeat of trial %s: %s", tid, exc)
            if self._stop.wait(interval):
                return

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


class _StaleTrialCallback:
    """Called (via optuna.storages.fail_stale_trials) for each RUNNING trial whose worker died: voids it for the
    n_trials count and re-enqueues its parameters (RetryFailedTrialCallback)."""

    def __init__(self, max_retry: int | None) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log.warning("trial %d lost its heartbeat (dead worker): marked FAIL, parameters re-enqueued", trial.number)
        study.set_user_attr(f"{VOID_PREFIX}{trial.number}", "stale")
        self.retry(study, trial)


# ----------------------------------------------------------------------------------------------- sweeper
class OptunaSweeperImpl:
    def __init__(
        self,
        sampler: Any,
        pruner: Any,
        direction: Any,
        study_name: str | None,
        storage: str | None,
        n_trials: int,
        n_jobs: int,
        params: MutableMapping[str, Any] | None = None,
        custom_search_space: str | None = None,
        metrics: list[str] | None = None,
        heartbeat_interval: int = 30,
        grace_period: int | None = 120,
        max_retry: int | None = 2,
        plots: bool = True,
        validate: str | None = None,
        max_failure_rate: float = 1.0,
        search_space: MutableMapping[str, Any] | None = None,
        timeout: Any = None,
        warm_start: Any = None,
        warm_start_from: Any = None,
    ) -> None:
        self.plots = bool(plots)
        self.validate = validate
        self.sampler_spec = _to_container(sampler)
        self.pruner_spec = _to_container(pruner)
        # None: resolved in setup() from the task config (objective.direction), else upstream's "minimize"
        self.directions: list[str] = [] if direction is None else _directions(_to_container(direction))
        self.study_name = study_name
        self.storage_url = storage
        self.n_trials: int | None = None if n_trials is None else int(n_trials)
        self.timeout = parse_timeout(_to_container(timeout))
        if self.n_trials is None and self.timeout is None:
            raise ValueError("hydra.sweeper.n_trials=null needs a time budget (hydra.sweeper.timeout)")
        self.warm_start = _to_container(warm_start)
        self.warm_start_from = _warm_start.from_spec(_to_container(warm_start_from))
        self.stop_reason = ""
        self.n_jobs = max(1, int(n_jobs))
        self.max_failure_rate = float(max_failure_rate)
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ValueError(f"hydra.sweeper.max_failure_rate={max_failure_rate}: must be between 0 and 1")
        self.params_given = params is not None
        self.params = _to_container(params) or {}
        self.search_space = _to_container(search_space)
        self.custom_search_space = custom_search_space
        self.metrics = list(_to_container(metrics) or []) or None
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.max_retry = max_retry
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher: Launcher = Plugins.instance().instantiate_launcher(
            config=config, hydra_context=hydra_context, task_function=task_function
        )
        self.sweep_dir = Path(str(config.hydra.sweep.dir))
        if not self.directions:
            self.directions, why = default_directions(config)
            log.info("hydra.sweeper.direction not set: %s (%s)", "/".join(self.directions), why)
        if not self.study_name:
            experiment = (
                OmegaConf.select(config, "experiment", default=None)
                or OmegaConf.select(config, "hydra.job.name", default=None)
                or "dermsweep"
            )
            choice = OmegaConf.select(config, "hydra.runtime.choices.sweep", default=None)
            self.study_name = f"{experiment}-{choice}" if choice else f"{experiment}-sweep"

    # -- study
    def _open_study(self, sampler_spec: dict[str, Any], sampler_extra: dict[str, Any]) -> optuna.Study:
        rdb_kwargs: dict[str, Any] = {}
        url = self.storage_url
        if url and not url.startswith("journal:") and url not in ("memory", ":memory:") and self.heartbeat_interval:
            rdb_kwargs = dict(
                heartbeat_interval=int(self.heartbeat_interval),
                grace_period=self.grace_period,
                heartbeat_stale_trial_callback=_StaleTrialCallback(self.max_retry),
            )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study_storage = optuna_storage.open_storage(url, **rdb_kwargs)
            # Probe the study first: a seeded sampler joining an existing study is offset by its trial count, so
            # a resumed sweep or a second worker does not replay the same random start-up points; a pruner
            # "auto" value an earlier sweep pinned is kept.
            offset = 0
            try:
                existing = optuna.load_study(study_name=self.study_name, storage=study_storage)
                offset = len(existing.get_trials(deepcopy=False))
                stored = existing.user_attrs.get(trial_link.PRUNER_ATTR)
                pinned = with_pinned(self.pruner_spec, json.loads(stored) if stored else None)
                if pinned is not self.pruner_spec:
                    key = _auto_key(self.pruner_spec)
                    log.info("pruner: %s=%s, pinned by an earlier sweep of this study", key, pinned[key])
                    self.pruner_spec = pinned
            except KeyError:
                pass
            pruner, dropped_p = optuna_storage.instantiate_filtered(self.pruner_spec)
            extra = dict(sampler_extra)
            if sampler_spec.get("seed") is not None:
                extra["seed"] = int(sampler_spec["seed"]) + offset
            sampler, dropped_s = optuna_storage.instantiate_filtered(sampler_spec, **extra)
        for what, dropped in (("sampler", dropped_s), ("pruner", dropped_p)):
            if dropped:
                log.warning(
                    "hydra.sweeper.%s: %s does not take %s: ignored",
                    what,
                    (self.sampler_spec if what == "sampler" else self.pruner_spec)["_target_"],
                    dropped,
                )
        study = optuna.create_study(
            study_name=self.study_name,
            storage=study_storage,
            sampler=sampler,
            pruner=pruner or optuna.pruners.NopPruner(),
            directions=cast(list[Any], self.directions),
            load_if_exists=True,
        )
        got = [d.name.lower() for d in study.directions]
        if got != self.directions:
            raise ValueError(
                f"study {self.study_name!r} in {_safe_url(url)} has directions {got}, the sweep asks for "
                f"{self.directions}: use another hydra.sweeper.study_name"
            )
        study.set_user_attr(trial_link.PRUNER_ATTR, json.dumps(self.pruner_spec))
        if self.metrics and not study.metric_names and len(self.metrics) == len(self.directions):
            study.set_metric_names(self.metrics)
        return study

    # -- counting and claiming slots (several sweep processes may share one study)
    @staticmethod
    def _void(study: optuna.Study) -> set:
        return {int(k[len(VOID_PREFIX) :]) for k in study.user_attrs if k.startswith(VOID_PREFIX)}

    def _counted(self, study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
        void = self._void(study)
        return [t for t in study.get_trials(deepcopy=False, states=COUNTED) if t.number not in void]

    @staticmethod
    def _order(t: optuna.trial.FrozenTrial) -> tuple[float, int]:
        return (t.datetime_start.timestamp() if t.datetime_start else float("inf"), t.number)

    def _claim(self, study: optuna.Study, trial: optuna.Trial) -> bool:
        """True when ``trial`` is among the first n_trials counted trials (by start time): exactly n_trials
        trials run in total even if several processes asked at the same moment."""
        counted = self._counted(study)
        mine = next((t for t in counted if t.number == trial.number), None)
        if mine is None:
            return False
        if self.n_trials is None:
            return True
        key = self._order(mine)
        ahead = sum(1 for t in counted if self._order(t) < key)
        return ahead < self.n_trials

    @staticmethod
    def _duplicate_warm_start(study: optuna.Study, trial: optuna.Trial) -> bool:
        """Two workers that opened a fresh study at the same moment may both have enqueued the warm start: a
        warm-start trial whose label an earlier counted trial already carries is such a copy."""
        frozen = study._storage.get_trial(trial._trial_id)
        label = frozen.user_attrs.get(parent_run.WARM_START_ATTR)
        if not label:
            return False
        void = OptunaSweeperImpl._void(study)
        return any(
            t.number < trial.number and t.number not in void and t.user_attrs.get(parent_run.WARM_START_ATTR) == label
            for t in study.get_trials(deepcopy=False, states=COUNTED)
        )

    @staticmethod
    def _running_with_heartbeat(study: optuna.Study, counted: list[optuna.trial.FrozenTrial]) -> list[int]:
        """RUNNING trials that have a heartbeat record, i.e. that will either finish or go stale (a RUNNING
        trial without any heartbeat never goes stale in Optuna: not worth waiting for)."""
        running = {t._trial_id: t.number for t in counted if t.state == TrialState.RUNNING}
        storage: Any = study._storage
        if not running or not optuna.storages._heartbeat.is_heartbeat_enabled(storage):
            return []
        try:
            from optuna.storages._rdb import models

            # a study's storage is Optuna's cache around the RDBStorage, which alone has the session
            storage = getattr(storage, "_backend", storage)
            session = storage.scoped_session()
            try:
                rows = (
                    session.query(models.TrialHeartbeatModel.trial_id)
                    .filter(models.TrialHeartbeatModel.trial_id.in_(list(running)))
                    .all()
                )
            finally:
                storage.scoped_session.remove()
            return sorted(running[r[0]] for r in rows)
        except Exception as exc:
            log.debug("heartbeat query failed: %s", exc)
            return []

    def _release(self, study: optuna.Study, trial: optuna.Trial, reason: str = "surplus", requeue: bool = True) -> None:
        """Give back a trial that must not count: asked beyond n_trials ("surplus"), cut short by an
        interrupted sweep ("interrupted") or a second copy of a warm-start trial ("duplicate", not requeued). It
        is voided (not counted, not shown as failed) and its parameters, if any were chosen, go back to the queue
        (with its warm-start label) so the next sweep runs them first."""
        frozen = study._storage.get_trial(trial._trial_id)
        queued = dict(frozen.system_attrs.get("fixed_params", {}))
        queued.update(frozen.params)
        study.set_user_attr(f"{VOID_PREFIX}{trial.number}", reason)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
        if queued and requeue:
            label = frozen.user_attrs.get(parent_run.WARM_START_ATTR)
            study.enqueue_trial(queued, user_attrs={parent_run.WARM_START_ATTR: label} if label else None)

    # -- values
    def _values(self, ret: Any) -> list[float]:
        n = len(self.directions)
        if isinstance(ret, MutableMapping) or OmegaConf.is_dict(ret):
            ret = dict(ret)
            if self.metrics:
                missing = [m for m in self.metrics if m not in ret]
                if missing:
                    raise ValueError(f"the task returned {sorted(ret)}, the sweep needs {self.metrics}")
                vals = [ret[m] for m in self.metrics]
            else:
                vals = list(ret.values())
        elif isinstance(ret, (list, tuple)):
            vals = list(ret)
        else:
            vals = [ret]
        if len(vals) != n:
            raise ValueError(f"the task returned {len(vals)} value(s) for {n} direction(s): {ret!r}")
        out = [float(v) for v in vals]
        if any(math.isnan(v) or math.isinf(v) for v in out):
            raise ValueError(f"the task returned a non-finite objective: {out}")
        return out

    @staticmethod
    def _tell_study(study: optuna.Study, trial: optuna.Trial, **kwargs: Any) -> None:
        try:
            study.tell(trial, skip_if_finished=True, **kwargs)
        except RuntimeError as exc:
            # GridSampler stops the study when its grid is done, which Optuna refuses outside study.optimize();
            # the trial's result is stored before that (as upstream, which ignores it too)
            if "Study.stop" not in str(exc):
                raise

    def _tell(self, study: optuna.Study, trial: optuna.Trial, ret: JobReturn) -> tuple[TrialState, str]:
        """Record the job's outcome; (state, failure reason or "")."""
        if ret.status == JobStatus.COMPLETED:
            try:
                values = self._values(ret._return_value)
            except (TypeError, ValueError) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            else:
                self._tell_study(study, trial, values=values)
                return TrialState.COMPLETE, ""
        else:
            error = ret._return_value
            if isinstance(error, optuna.TrialPruned) or type(error).__name__ == "TrialPruned":
                self._tell_study(study, trial, state=TrialState.PRUNED)
                return TrialState.PRUNED, ""
            reason = f"{type(error).__name__}: {error}"
        log.warning("trial %d failed: %s", trial.number, reason)
        try:
            trial.set_user_attr("dermsweep.failure_reason", reason[:5000])
        except Exception:
            pass
        self._tell_study(study, trial, state=TrialState.FAIL)
        return TrialState.FAIL, reason

    def _check_failure_rate(self, results: list[tuple[JobReturn, TrialState, str]]) -> None:
        """hydra-optuna-sweeper's max_failure_rate: after each batch, more failed trials than max_failure_rate of
        the batch stops the sweep by raising the first failed job's own exception."""
        failed = [(ret, reason) for ret, state, reason in results if state == TrialState.FAIL]
        if not failed or len(failed) / len(results) <= self.max_failure_rate:
            return
        log.error(
            "Failed %d times out of %d with max_failure_rate=%s: stopping the sweep",
            len(failed),
            len(results),
            self.max_failure_rate,
        )
        for ret, _reason in failed:
            if ret.status == JobStatus.FAILED and isinstance(ret._return_value, BaseException):
                ret.return_value  # noqa: B018  (JobReturn raises the job's exception, with its traceback)
        raise ValueError(f"trial failed ({failed[0][1]}) and max_failure_rate={self.max_failure_rate}")

    # -- the loop
    def _custom_space(self) -> Any:
        if not self.custom_search_space:
            return None
        module, _, name = self.custom_search_space.rpartition(".")
        return getattr(importlib.import_module(module), name)

    def _preflight(
        self,
        space: dict[str, BaseDistribution],
        fixed: dict[str, str],
        warm: Sequence[tuple[str, dict[str, Any]]] = (),
    ) -> None:
        """Compose and validate the config for the fixed overrides, for each end of every searched range (one param
        at a time) and for each warm-start configuration of the sweep file, so a bad value fails the sweep at once
        instead of failing every trial."""
        if not self.validate:
            return
        default = self.validate == DEFAULT_VALIDATE
        lacking = [k for k in DERMSWEEP_TOP_KEYS if k not in self.config] if default else []
        if lacking:  # another app's config (e.g. hydra-optuna-sweeper's examples): the default check is not for it
            log.info(
                "pre-flight %s skipped: not dermsweep's training config (no %s)", self.validate, ", ".join(lacking)
            )
            return
        module, _, name = self.validate.rpartition(".")
        check = getattr(importlib.import_module(module), name)
        base = [override_line(k, v) for k, v in fixed.items()]
        variants: list[list[str]] = [base]
        for key, dist in space.items():
            if isinstance(dist, CategoricalDistribution):
                values = list(dist.choices)
            else:
                assert isinstance(dist, FloatDistribution | IntDistribution)
                values = [dist.low, dist.high]
            variants += [base + [f"{key}={v}"] for v in values]
        labels = [""] * len(variants)
        for label, entry in warm:
            variants.append(base + [f"{k}={v}" for k, v in entry.items()])
            labels.append(label)
        for i, (overrides, label) in enumerate(zip(variants, labels, strict=True)):
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
            try:
                check(cfg)
            except (ConfigAttributeError, ConfigKeyError) as exc:
                if not (default and i == 0):
                    raise
                log.info("pre-flight %s skipped: not dermsweep's training config (%s)", self.validate, exc)
                return
            except Exception as exc:
                if not label:
                    raise
                raise ValueError(f"hydra.sweeper.{label} ({' '.join(overrides[len(base) :])}): {exc}") from exc

    def _space(self, arguments: list[str]) -> tuple[dict[str, BaseDistribution], dict[str, str]]:
        """The search space and fixed overrides from params (or the deprecated search_space) and the command line."""
        space, fixed = parse_search_space(self.params, arguments, self.hydra_context.config_loader)
        if self.search_space:
            if self.params_given:
                warnings.warn(
                    "Both hydra.sweeper.params and hydra.sweeper.search_space are configured: "
                    "hydra.sweeper.params defines the search space.",
                    UserWarning,
                    stacklevel=2,
                )
            else:
                warnings.warn(
                    "hydra.sweeper.search_space is deprecated (hydra-optuna-sweeper 1.2): use hydra.sweeper.params",
                    UserWarning,
                    stacklevel=2,
                )
                base = distributions_from_search_space(self.search_space)
                space = {**{k: v for k, v in base.items() if k not in fixed and f"~{k}" not in fixed}, **space}
        return space, fixed

    def sweep(self, arguments: list[str]) -> Any:
        space, fixed = self._space(arguments)
        sampler_spec, sampler_extra, grid_size = _samplers.prepare(self.sampler_spec, space)
        if grid_size is not None and (self.n_trials is None or grid_size < self.n_trials):
            log.info("n_trials %s -> %d: the size of GridSampler's grid", self.n_trials, grid_size)
            self.n_trials = grid_size
        custom = self._custom_space()
        warm = _warm_start.check_entries(
            self.warm_start, space, fixed, log, define_by_run=bool(self.custom_search_space)
        )
        self._preflight(space, fixed, warm)
        study = self._open_study(sampler_spec, sampler_extra)
        log.info(
            "Study %s (%s), storage %s, sampler %s, n_trials=%s, n_jobs=%d%s",
            study.study_name,
            "/".join(self.directions),
            _safe_url(self.storage_url),
            type(study.sampler).__name__,
            self.n_trials,
            self.n_jobs,
            f", timeout={format_duration(self.timeout)} of sweep time" if self.timeout is not None else "",
        )
        log.info("Search space: %s", {k: repr(v) for k, v in space.items()})
        if fixed:
            log.info("Fixed: %s", fixed)
        self._warm_start(study, space, warm)

        parent = None
        try:
            uri, experiment, artifact_root = parent_run.tracking_settings(self.config)
            parent = parent_run.SweepParent.open(
                uri,
                experiment,
                artifact_root,
                study.study_name,
                tags=parent_run.sweep_tags(
                    _safe_url(self.storage_url),
                    self.directions,
                    self.n_trials,
                    "none" if self.timeout is None else format_duration(self.timeout),
                ),
            )
            parent_run.write_parent_file(self.sweep_dir, parent.run_id)
            study.set_user_attr("mlflow_parent_run_id", parent.run_id)
        except Exception as exc:
            log.warning("no MLflow parent run for the sweep: %s", exc)

        trial_link.register_local_study(study)
        status = "FAILED"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")
                self._loop(study, space, fixed, custom, parent)
            status = "FINISHED"
        except KeyboardInterrupt:
            status = "KILLED"
            self.stop_reason = "interrupted (Ctrl-C): running trials were given back, a re-run resumes them"
            raise
        except BaseException as exc:
            if not self.stop_reason.startswith("max_failure_rate"):
                self.stop_reason = f"error: {type(exc).__name__}: {exc}"
            raise
        finally:
            trial_link.unregister_local_study(study)
            log.info("Sweep stopped: %s", self.stop_reason or status)
            if parent is not None:
                parent.finalize(study, status=status, plots=self.plots, stop_reason=self.stop_reason or None)
        self._write_results(study)
        return None

    # -- warm start
    def _warm_start(
        self, study: optuna.Study, space: dict[str, BaseDistribution], warm: list[tuple[str, dict[str, Any]]]
    ) -> None:
        """Enqueue the warm-start configurations (the sweep file's, then the best runs of warm_start_from), once
        per study: the study's user attr WARM_STARTED_ATTR says it was done, so a resume does not enqueue again."""
        if not warm and not self.warm_start_from:
            return
        done = study.user_attrs.get(WARM_STARTED_ATTR)
        if done is not None:
            log.info("warm start: this study was seeded before (%s), not again", done)
            return
        queue = list(warm)
        if self.warm_start_from:
            queue += self._entries_from_mlflow(space)
        seen: set[str] = set()
        unique: list[tuple[str, dict[str, Any]]] = []
        for label, entry in queue:
            key = json.dumps(entry, sort_keys=True, default=repr)
            if key in seen:
                log.info("warm start %s: the same configuration as an earlier one: skipped", label)
                continue
            seen.add(key)
            unique.append((label, entry))
        # mark first: a worker opening the study from now on leaves it alone (two opening it at the same moment
        # may both enqueue: the second copy of each label is voided when asked, see _duplicate_warm_start)
        study.set_user_attr(WARM_STARTED_ATTR, json.dumps({"n": len(unique), "from": [lb for lb, _ in unique]}))
        for label, entry in unique:
            study.enqueue_trial(entry, user_attrs={parent_run.WARM_START_ATTR: label})
            log.info("warm start %s enqueued: %s", label, entry)
        if self.n_trials is not None and len(unique) > self.n_trials:
            log.warning(
                "warm start: %d configurations enqueued, n_trials=%d: the rest wait in the queue for a later run "
                "with a larger n_trials",
                len(unique),
                self.n_trials,
            )
        if unique and str(self.sampler_spec.get("_target_")) == _samplers.GRID:
            log.warning("warm start with GridSampler: the enqueued trials take n_trials slots from the grid")

    def _entries_from_mlflow(self, space: dict[str, BaseDistribution]) -> list[tuple[str, dict[str, Any]]]:
        """The best runs of warm_start_from's experiment mapped onto the space (what does not fit is dropped, with
        a logged line per run)."""
        spec = self.warm_start_from
        assert spec is not None
        metric = spec["metric"] or OmegaConf.select(self.config, "objective.metric", default=None)
        if not metric:
            raise ValueError(
                "hydra.sweeper.warm_start_from.metric is needed: the task config has no objective.metric to default to"
            )
        direction = str(spec["direction"] or self.directions[0]).lower()
        uri = spec["tracking_uri"] or parent_run.tracking_settings(self.config)[0]
        runs = parent_run.best_runs(uri, str(spec["experiment"]), str(metric), direction, spec["top_k"], spec["filter"])
        if not runs:
            log.warning(
                "warm start: no FINISHED run with %s in experiment %s: nothing enqueued from it",
                metric,
                spec["experiment"],
            )
        out: list[tuple[str, dict[str, Any]]] = []
        for run_id, value, params in runs:
            entry, notes = _warm_start.from_run(params, space)
            label = f"run {run_id}"
            other = self._differing(params, space)
            if other:
                notes.append("not searched here, this sweep's value kept: " + ", ".join(other))
            log.info(
                "warm start from %s (%s=%.6g): %s%s",
                label,
                metric,
                value,
                entry or "nothing fits this search space",
                "; " + "; ".join(notes) if notes else "",
            )
            if entry:
                out.append((label, entry))
        return out

    def _differing(
        self, params: Mapping[str, str], space: Mapping[str, BaseDistribution], limit: int = 10
    ) -> list[str]:
        """Config keys a run logged with another value than this sweep's config has, outside the search space."""
        names = {k.lstrip("+") for k in space}
        skip = names | {f"{n}.name" for n in names}
        out: list[str] = []
        for key in sorted(params):
            if key in skip:
                continue
            try:
                here = OmegaConf.select(self.config, key, default=None, throw_on_resolution_failure=False)
            except Exception:
                continue
            if here is None or OmegaConf.is_config(here):
                continue
            if str(here) != params[key]:
                out.append(f"{key} (run {params[key]}, here {here})")
        return out[:limit] + ([f"{len(out) - limit} more"] if len(out) > limit else [])

    def _budget_left(self, study: optuna.Study, counted: list[optuna.trial.FrozenTrial]) -> int:
        """Trials this process may still launch (0: a budget is spent, and self.stop_reason says which)."""
        to_go = self.n_jobs if self.n_trials is None else self.n_trials - len(counted)
        if to_go <= 0:
            self.stop_reason = f"n_trials reached: {len(counted)} of {self.n_trials} trials finished or running"
            return 0
        if self.timeout is not None:
            spent = parent_run.sweep_seconds(study)
            if spent >= self.timeout:
                finished = sum(1 for t in counted if t.state != TrialState.RUNNING)
                self.stop_reason = (
                    f"timeout: {format_duration(spent)} of sweep time spent, budget {format_duration(self.timeout)}"
                    f" (hydra.sweeper.timeout); {finished} trials finished, no new trial launched"
                )
                return 0
        return to_go

    def _pin_pruner(self, study: optuna.Study) -> None:
        """HyperbandPruner's max_resource / SuccessiveHalvingPruner's min_resource left at "auto": once a trial is
        COMPLETE, fix the value in the study's pruner spec (the one jobs, resumed sweeps and other workers read), so
        every process prunes with the same brackets and rungs instead of each resolving "auto" from whatever trials
        it sees first."""
        key = _auto_key(self.pruner_spec)
        if key is None:
            return
        stored = study.user_attrs.get(trial_link.PRUNER_ATTR)
        spec = with_pinned(self.pruner_spec, json.loads(stored) if stored else None)  # another worker's pin
        if spec is self.pruner_spec:
            value = resolve_auto(self.pruner_spec, study)
            if value is None:
                return
            spec = {**self.pruner_spec, key: value}
            study.set_user_attr(trial_link.PRUNER_ATTR, json.dumps(spec))
        log.info('pruner: %s "auto" pinned to %s for this study', key, spec[key])
        self.pruner_spec = spec
        pruner, _ = optuna_storage.instantiate_filtered(spec)
        study.pruner = pruner

    def _loop(
        self, study: optuna.Study, space: dict[str, BaseDistribution], fixed: dict[str, str], custom: Any, parent: Any
    ) -> None:
        storage_url = self.storage_url if self.storage_url not in ("memory", ":memory:", "") else None
        parent_id = parent.run_id if parent is not None else None
        hb_enabled = optuna.storages._heartbeat.is_heartbeat_enabled(study._storage)
        # trials' owner records: dead sweeps' trials are failed at once on their machine, and elsewhere by the
        # records' own heartbeat where the storage keeps none (journal files)
        beat = None if hb_enabled else self.heartbeat_interval
        while True:
            # first: a dead owner on this machine is a sure (and more precise) verdict than a stale heartbeat
            trial_owner.fail_dead(study, trial_owner.stale_limit(beat, self.grace_period), self.max_retry)
            optuna.storages.fail_stale_trials(study)
            if parent is not None:
                parent.close_orphans(study)
            counted = self._counted(study)
            to_go = self._budget_left(study, counted)
            if to_go <= 0:
                running = self._running_with_heartbeat(study, counted)
                if running:
                    # Other workers' trials (or a dead sweep's, until their heartbeat goes stale): wait, since a
                    # stale one is failed and re-enqueued for us to run, and the summary should be complete.
                    log.info("waiting for running trials %s (other workers or stale)", running)
                    time.sleep(min(5.0, float(self.heartbeat_interval)))
                    continue
                break
            trials: list[optuna.Trial] = []
            for _ in range(min(self.n_jobs, to_go)):
                t = study.ask()
                if hb_enabled:  # at once: a RUNNING trial without any heartbeat would never go stale
                    cast(Any, study._storage).record_heartbeat(t._trial_id)
                trial_owner.claim(study, t, beat)
                if self._duplicate_warm_start(study, t):
                    self._release(study, t, reason="duplicate", requeue=False)
                elif self._claim(study, t):
                    trials.append(t)
                else:
                    self._release(study, t)
            if not trials:
                continue
            try:
                batch = [self._job_overrides(study, t, space, fixed, custom, storage_url, parent_id) for t in trials]
                log.info("Launching trials %s", [t.number for t in trials])
                with _Heartbeat(study._storage, [t._trial_id for t in trials]):
                    returns = self.launcher.launch(batch, initial_job_idx=self.job_idx)
            except BaseException:
                # Ctrl-C, a bad search space, a broken launcher (not a job's failure): give the trials back
                for t in trials:
                    try:
                        self._release(study, t, reason="interrupted")
                    except Exception as exc:
                        log.warning("trial %d left as is: %s", t.number, exc)
                raise
            self.job_idx += len(returns)
            results = []
            for t, ret in zip(trials, returns, strict=False):
                state, reason = self._tell(study, t, ret)
                results.append((ret, state, reason))
                log.info("trial %d: %s", t.number, state.name)
            self._pin_pruner(study)
            if parent is not None:
                parent.log_progress(study, finished=[t.number for t in trials])
            try:
                self._check_failure_rate(results)
            except BaseException as exc:
                self.stop_reason = f"max_failure_rate={self.max_failure_rate} exceeded: {exc}"
                raise

    def _job_overrides(
        self,
        study: optuna.Study,
        t: optuna.Trial,
        space: dict[str, BaseDistribution],
        fixed: dict[str, str],
        custom: Any,
        storage_url: str | None,
        parent_id: str | None,
    ) -> tuple[str, ...]:
        for name, dist in space.items():
            t._suggest(name, dist)
        if custom is not None:
            custom(self.config, t)
        for name, value in fixed.items():
            if not name.startswith("~"):
                t.set_user_attr(name, value)
        env = trial_link.job_env(study.study_name, storage_url, t._trial_id, t.number, parent_id)
        return (
            tuple(f"{n}={v}" for n, v in t.params.items())
            + tuple(override_line(n, v) for n, v in fixed.items())
            + env_overrides(env)
        )

    def _write_results(self, study: optuna.Study) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        result: dict[str, Any] = {"name": "optuna", "study_name": study.study_name}
        if complete and len(self.directions) == 1:
            result["best_params"] = study.best_params
            result["best_value"] = study.best_value
        elif complete:
            result["solutions"] = [
                {"number": t.number, "params": t.params, "values": t.values} for t in study.best_trials
            ]
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(
            OmegaConf.create(json.loads(json.dumps(result, default=str))), self.sweep_dir / "optimization_results.yaml"
        )
        log.info("Results: %s", result)
