"""The link between an Optuna trial (owned by the sweeper) and the training job that evaluates it.

The sweeper (``hydra/sweeper=optuna``) gives every job a few environment variables (``DERMSWEEP_OPTUNA_*``:
study name, storage URL, trial id and number; ``DERMSWEEP_PARENT_RUN_ID``) through Hydra's per-job
``hydra.job.env_set``, applied by ``hydra.core.utils.run_job`` inside ``env_override``, which restores the previous
environment when the job ends: nothing leaks into the next in-process job or a later single run.
The job rebuilds the trial from the storage (the pruner spec is a study user attr), so this works in the launcher's
process and in any other process (joblib, SLURM) that can reach the storage::

    from dermsweep.sweep import trial_link
    link = trial_link.current()          # None outside an Optuna sweep
    link.number, link.run_tags
    link.set_run_id(mlflow_run_id)       # lets the sweep summary point at the child run
    link.report(epoch, value)            # raises optuna.TrialPruned when the pruner says so
    trial_link.parent_run_id()           # MLflow parent run of this sweep / grid multirun, else None

Nothing here imports optuna or mlflow at import time.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import warnings
from pathlib import Path
from typing import Any

from ..cache import ProcessCache
from ..objectives import better, dominates
from ..tracking import run_format as rf
from . import optuna_private
from .storage import instantiate_filtered, open_storage

log = logging.getLogger(__name__)

# Per-job environment set by the sweeper (through hydra.job.env_set): readable in logs, restored after the job.
ENV_STUDY = "DERMSWEEP_OPTUNA_STUDY"
ENV_STORAGE = "DERMSWEEP_OPTUNA_STORAGE"  # "memory" = the sweeper's in-process study
ENV_TRIAL_ID = "DERMSWEEP_OPTUNA_TRIAL_ID"
ENV_TRIAL_NUMBER = "DERMSWEEP_OPTUNA_TRIAL_NUMBER"
ENV_PARENT_RUN = "DERMSWEEP_PARENT_RUN_ID"
ENV_VARS = (ENV_STUDY, ENV_STORAGE, ENV_TRIAL_ID, ENV_TRIAL_NUMBER, ENV_PARENT_RUN)
# Study user attr holding the pruner spec ({_target_: ..., kwargs}), so jobs in other processes prune alike.
PRUNER_ATTR = "dermsweep.pruner"
FOLDS_ATTR = rf.CV_FOLDS  # a trial's user attr: its steps are cross-validation folds, this many
# Name of the file (in the multirun's sweep dir) holding the MLflow parent run id, for grid multiruns and sweeps.
PARENT_RUN_FILE = ".dermsweep_parent_run_id"

# Studies registered by a sweeper in this very process (in-memory storage, or just to reuse its connection).
_LOCAL_STUDIES: dict[str, Any] = {}
# Storages and studies jobs opened in this process, by URL / (URL, study): kept open for the later trials.
_STORAGES: dict[str, Any] = {}
_STUDIES: dict[tuple, Any] = {}
_LOCK = threading.Lock()


# ----------------------------------------------------------------------------------------------- payload
def job_env(
    study_name: str, storage_url: str | None, trial_id: int, number: int, parent_run_id: str | None
) -> dict[str, str]:
    """The environment one trial's job gets (the sweeper turns it into hydra.job.env_set overrides)."""
    env = {
        ENV_STUDY: study_name,
        ENV_STORAGE: storage_url or "memory",
        ENV_TRIAL_ID: str(trial_id),
        ENV_TRIAL_NUMBER: str(number),
    }
    if parent_run_id:
        env[ENV_PARENT_RUN] = parent_run_id
    return env


def _payload() -> dict[str, Any] | None:
    env = os.environ
    if not env.get(ENV_TRIAL_ID) or not env.get(ENV_STUDY):
        return None
    try:
        return {
            "study_name": env[ENV_STUDY],
            "storage": None if env.get(ENV_STORAGE, "memory") == "memory" else env[ENV_STORAGE],
            "trial_id": int(env[ENV_TRIAL_ID]),
            "number": int(env.get(ENV_TRIAL_NUMBER, "-1")),
            "parent_run_id": env.get(ENV_PARENT_RUN) or None,
        }
    except ValueError:
        log.warning("ignoring malformed %s environment", ENV_TRIAL_ID)
        return None


def _shared_storage(url: str) -> Any:
    with _LOCK:
        if url not in _STORAGES:
            _STORAGES[url] = open_storage(url)
        return _STORAGES[url]


def register_local_study(study: Any) -> None:
    """Called by the sweeper: jobs in this process reuse its study object (and its pruner)."""
    _LOCAL_STUDIES[study.study_name] = study


def unregister_local_study(study: Any) -> None:
    _LOCAL_STUDIES.pop(study.study_name, None)


def _load_study(payload: dict[str, Any]) -> Any:
    name = payload["study_name"]
    local = _LOCAL_STUDIES.get(name)
    if local is not None:
        return local
    key = (payload.get("storage"), name)
    with _LOCK:
        if key in _STUDIES:
            return _STUDIES[key]
    import optuna

    if payload.get("storage") is None:
        raise RuntimeError(
            "this job runs outside the sweeper's process but the study has no persistent storage: "
            "set hydra.sweeper.storage (e.g. sqlite:///mlruns/optuna.db) to use another launcher"
        )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        storage = _shared_storage(payload["storage"])
        study = optuna.load_study(study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler())
        spec = study.user_attrs.get(PRUNER_ATTR)
        pruner, _ = instantiate_filtered(json.loads(spec) if spec else None)
        # jobs never sample (RandomSampler keeps Trial() cheap); they prune like the sweeper
        study = optuna.load_study(
            study_name=name,
            storage=storage,
            sampler=optuna.samplers.RandomSampler(),
            pruner=pruner or optuna.pruners.NopPruner(),
        )
    with _LOCK:
        _STUDIES[key] = study
    return study


# ----------------------------------------------------------------------------------------------- API
class TrialLink:
    """One Optuna trial as seen from the job evaluating it."""

    def __init__(self, payload: dict[str, Any]) -> None:
        self._p = payload
        self.number: int = int(payload["number"])
        self.trial_id: int = int(payload["trial_id"])
        self.study_name: str = payload["study_name"]
        self.storage_url: str | None = payload.get("storage")
        self._trial: Any = None
        self._warned_multi = False

    def __repr__(self) -> str:
        return f"TrialLink(study={self.study_name!r}, number={self.number})"

    @property
    def run_tags(self) -> dict[str, str]:
        """Tags for this trial's MLflow child run."""
        return {rf.STUDY_NAME: self.study_name, rf.TRIAL_NUMBER: str(self.number), rf.ROLE: "trial"}

    @property
    def trial(self) -> Any:
        """The live ``optuna.trial.Trial`` (rebuilt from storage)."""
        if self._trial is None:
            study = _load_study(self._p)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._trial = optuna_private.attach(study, self.trial_id)
        return self._trial

    def report(self, step: int, value: float, prunable: bool = True) -> None:
        """Report the objective's value after ``step`` (epoch); raise ``optuna.TrialPruned`` if pruned.

        ``prunable=False`` (the last epoch): reported, never pruned, since stopping then saves nothing and would
        throw a finished model away (successive halving's top rung can fall on the last epoch).
        Multi-objective studies cannot prune in Optuna: the call is then a no-op (one warning)."""
        import optuna

        if len(self.trial.study.directions) > 1:
            if not self._warned_multi:
                log.warning("multi-objective study: intermediate values are not reported, no pruning")
                self._warned_multi = True
            return
        trial = self.trial
        trial.report(float(value), int(step))
        if prunable and trial.should_prune():
            raise optuna.TrialPruned(f"trial {self.number} pruned at step {step} (value {value:.6g})")

    def improves(self, values: list[float]) -> bool:
        """Do these objective values beat every finished (COMPLETE) trial of the study so far?

        Single objective: strictly better than the best value. Several: no finished trial dominates them (a new
        point of the Pareto front). True when nothing has finished yet."""
        from optuna.study import StudyDirection
        from optuna.trial import TrialState

        study = self.trial.study
        finished = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.values]
        directions = ["maximize" if d == StudyDirection.MAXIMIZE else "minimize" for d in study.directions]
        mine = [float(v) for v in values]
        if len(directions) == 1:
            return all(better(mine[0], t.values[0], directions[0]) for t in finished)
        return not any(dominates(t.values, mine, directions) for t in finished)

    def should_prune(self) -> bool:
        return len(self.trial.study.directions) == 1 and bool(self.trial.should_prune())

    def set_user_attr(self, key: str, value: Any) -> None:
        self.trial.set_user_attr(key, value)

    def set_run_id(self, run_id: str) -> None:
        """Store the MLflow child run id on the trial (user attr ``mlflow_run_id``)."""
        self.set_user_attr("mlflow_run_id", str(run_id))


_LINK: ProcessCache[TrialLink] = ProcessCache("trial link")


def current() -> TrialLink | None:
    """The trial this job evaluates (kept for the job's epochs), or None when not inside an Optuna sweep."""
    payload = _payload()
    if payload is None:
        return None
    return _LINK.get(tuple(sorted(payload.items())), lambda: TrialLink(payload))


def parent_run_id() -> str | None:
    """MLflow run id of the sweep's parent run (Optuna sweep or grid multirun); None for single runs."""
    payload = _payload()
    if payload is not None and payload.get("parent_run_id"):
        return str(payload["parent_run_id"])
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        candidates = []
        if hc.runtime.output_dir:
            out = Path(hc.runtime.output_dir)
            candidates += [out.parent, out.parent.parent, out]
        candidates.append(Path(hc.sweep.dir).absolute())
        for folder in candidates:
            f = folder / PARENT_RUN_FILE
            if f.is_file():
                text = f.read_text().strip()
                return text or None
    except Exception as exc:
        log.warning("could not determine the MLflow parent run: %s", exc)
    return None
