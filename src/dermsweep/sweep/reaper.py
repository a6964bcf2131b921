"""`dermsweep runs --reap`: what dead processes left RUNNING, found and marked, in MLflow and in the Optuna studies
of the sweeps recorded there.

MLflow runs go through tracking.run_owner.reap (KILLED, with the reason). Each sweep parent run names its study and
storage (tags `dermsweep.study_name`, `dermsweep.optuna_storage`); its RUNNING trials whose owner died are failed,
voided and re-queued by sweep.trial_owner.fail_dead, exactly as the next sweep on that study would do. A storage
recorded without its password (`user:***@host`) or in memory cannot be opened from here, nor a SQLite or journal
file that is not there (opening it would create an empty one; sweeps record absolute paths, older ones may be
relative to the directory they ran in): each is listed as skipped.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Any

from .. import liveness
from ..tracking import run_format as rf
from ..tracking import run_owner
from . import trial_owner
from .storage import local_file, open_storage

log = logging.getLogger(__name__)

# The sweeper's default hydra.sweeper.max_retry: a killed trial's parameters are re-queued at most this often.
MAX_RETRY = 2
MAX_SWEEPS = 200  # the most recent sweep parents looked at


@dataclass
class ReapReport:
    runs: list[run_owner.Reaped] = field(default_factory=list)
    trials: list[tuple[str, int]] = field(default_factory=list)  # (study name, trial number)
    skipped: list[str] = field(default_factory=list)  # studies that could not be checked, and why

    def to_json(self) -> dict[str, Any]:
        return {
            "runs": [vars(r) for r in self.runs],
            "trials": [{"study_name": s, "number": n} for s, n in self.trials],
            "skipped": self.skipped,
        }


def _sweeps(client: Any) -> list[tuple[str, str]]:
    """(storage URL, study name) of the most recent sweep parent runs, without repeats."""
    ids = [e.experiment_id for e in client.search_experiments()]
    if not ids:
        return []
    parents = client.search_runs(
        ids,
        filter_string=f"tags.`{rf.ROLE}` = 'sweep'",
        max_results=MAX_SWEEPS,
        order_by=["attributes.start_time DESC"],
    )
    seen: dict[tuple[str, str], None] = {}
    for p in parents:
        storage, study = p.data.tags.get(rf.OPTUNA_STORAGE), p.data.tags.get(rf.STUDY_NAME)
        if storage and study:
            seen[(storage, study)] = None
    return list(seen)


def reap(client: Any, stale_after: float = liveness.STALE_AFTER_S) -> ReapReport:
    import optuna

    report = ReapReport(runs=run_owner.reap(client, stale_after))
    for storage_url, study_name in _sweeps(client):
        if storage_url == "memory" or "***" in storage_url:
            report.skipped.append(f"{study_name}: storage {storage_url} cannot be opened from here")
            continue
        path = local_file(storage_url)
        if path is not None and not path.is_file():  # opening it would create an empty store
            why = "no such file"
            if not path.is_absolute():  # recorded before sweeps made it absolute: relative to the sweep's directory
                why = "a relative path, not found here: run `dermsweep runs --reap` from the directory the sweep ran in"
            report.skipped.append(f"{study_name}: storage {storage_url}: {why}")
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                study = optuna.load_study(study_name=study_name, storage=open_storage(storage_url))
                numbers = trial_owner.fail_dead(study, stale_after, MAX_RETRY)
        except Exception as exc:
            report.skipped.append(f"{study_name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
            continue
        report.trials += [(study_name, n) for n in numbers]
    return report
