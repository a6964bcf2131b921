"""MLflow parent runs for multiruns, their lifecycle: one per Optuna sweep (reused on resume) and one per plain grid
multirun. Opened (found, or made by one worker), given the sweep's settings as params and a description, fed
progress, closed with the study's files (sweep.study_report) and a status.

Everything goes through ``MlflowClient`` (never ``mlflow.start_run``), so no MLflow run becomes "active" in the
sweeper's process: in-process jobs (basic launcher) start their own child run with
``mlflow.start_run(parent_run_id=trial.parent_run_id(), ...)``. MLflow requires the parent to be RUNNING then; a
reused parent is set back to RUNNING while the sweep runs.

Logging here is best-effort: a tracking hiccup logs a warning and never stops a sweep.
"""

from __future__ import annotations

import atexit
import logging
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from hydra.experimental.callback import Callback

from ..tracking import run_format as rf
from ..tracking import run_owner
from ..tracking.store import ensure_experiment
from . import study_report
from .trial_link import PARENT_RUN_FILE

log = logging.getLogger(__name__)

OPTUNA_SWEEPER_TARGET_PREFIX = "hydra_plugins.dermsweep_optuna_sweeper"
# Workers that joined a study another worker created wait this long for its parent run to appear.
PARENT_WAIT_SECONDS = 30.0
# A worker that made a parent run for a study it did not create (a resumed study without one, or the creator's
# never appeared) waits this long before checking whether another worker made one too. The study's creator never
# waits: it alone makes the parent of a new study.
PARENT_SETTLE_SECONDS = 3.0
MAX_PARAM_LENGTH = 500  # MLflow keeps up to 6,000 characters; a param is for reading at a glance
_F = TypeVar("_F", bound=Callable[..., Any])


def tracking_settings(config: Any) -> tuple[str | None, str, str | None]:
    """(tracking URI, experiment name, local artifact root) from a composed dermsweep config."""
    from omegaconf import OmegaConf

    uri = OmegaConf.select(config, "tracking.uri", default=None)
    experiment = OmegaConf.select(config, "experiment", default=None) or "Default"
    artifact_root = OmegaConf.select(config, "tracking.artifact_root", default=None)
    return uri, str(experiment), artifact_root


def sweep_tags(storage: str, directions: list[str], n_trials: int | None, timeout: str = "none") -> dict[str, str]:
    """Tags of an Optuna sweep's parent run: where its study lives and what it asks for (n_trials None: no trial
    budget, a time budget only)."""
    return {
        rf.OPTUNA_STORAGE: storage,
        rf.DIRECTIONS: ",".join(directions),
        rf.N_TRIALS: "unlimited" if n_trials is None else str(n_trials),
        rf.TIMEOUT: timeout,
    }


def _client(uri: str | None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def write_parent_file(sweep_dir: str | Path, run_id: str) -> None:
    d = Path(str(sweep_dir)).absolute()
    d.mkdir(parents=True, exist_ok=True)
    (d / PARENT_RUN_FILE).write_text(run_id)


def _safe(fn: _F) -> _F:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            log.warning("MLflow parent run: %s failed: %s", fn.__name__, exc)
            return None

    wrapper.__name__ = fn.__name__
    return wrapper  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------------- Optuna sweeps
class SweepParent:
    """The parent run of one Optuna study: found by tags ``dermsweep.role=sweep`` + ``dermsweep.study_name``."""

    def __init__(self, client: Any, run_id: str, experiment_id: str) -> None:
        self.client = client
        self.run_id = run_id
        self.experiment_id = experiment_id

    @classmethod
    def open(
        cls,
        uri: str | None,
        experiment: str,
        artifact_root: str | None,
        study_name: str,
        tags: dict[str, str] | None = None,
        *,
        created_study: bool = True,
        fresh_study: bool = True,
        params: Mapping[str, str] | None = None,
        description: str | None = None,
    ) -> SweepParent:
        """The study's parent run: found, else made. ``created_study``: this process created the study, so it
        alone makes the parent of a new study (no pause, no duplicate); a worker that joined a ``fresh_study`` (no
        finished trial) waits for the creator's parent instead."""
        client = _client(uri)
        exp_id = ensure_experiment(client, experiment, artifact_root)
        found = cls._find(client, exp_id, study_name)
        if not found and not created_study and fresh_study:
            found = cls._await(client, exp_id, study_name)
        if found:
            run_id = found[0].info.run_id
            # Claimed before it is RUNNING again: its dead earlier workers' records must not get it reaped.
            run_owner.claim(client, run_id)
            if found[0].info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            log.info("MLflow: parent run %s of study %s", run_id, study_name)
        else:
            run_id = cls._create(client, exp_id, study_name, tags, settle=not created_study)
            run_owner.claim(client, run_id)  # each worker is an owner: the run is reaped once all of them died
            log.info("MLflow: parent run %s for study %s", run_id, study_name)
        for k, v in (tags or {}).items():
            client.set_tag(run_id, k, v)
        parent = cls(client, run_id, exp_id)
        parent.describe(params or {}, description)
        return parent

    @classmethod
    def _create(cls, client: Any, exp_id: str, study_name: str, tags: dict[str, str] | None, settle: bool) -> str:
        run = client.create_run(
            exp_id, run_name=study_name, tags={rf.ROLE: "sweep", rf.STUDY_NAME: study_name, **(tags or {})}
        )
        run_id: str = run.info.run_id
        if settle:
            # Not the study's creator, so other workers may each have made one. A run's start time is taken before
            # it is stored, so a search made at once can miss an older one still being written (seen on a loaded
            # machine: two parents). After a pause every worker sees the same set and keeps the same, the oldest.
            time.sleep(PARENT_SETTLE_SECONDS)
            found = cls._find(client, exp_id, study_name)
            if found and found[0].info.run_id != run_id:
                client.delete_run(run_id)
                run_id = found[0].info.run_id
        return run_id

    @classmethod
    def _await(cls, client: Any, exp_id: str, study_name: str) -> list[Any]:
        """The parent run the study's creator is making, once it is there (empty after PARENT_WAIT_SECONDS)."""
        deadline = time.monotonic() + PARENT_WAIT_SECONDS
        while time.monotonic() < deadline:
            time.sleep(0.5)
            found = cls._find(client, exp_id, study_name)
            if found:
                return found
        log.warning("MLflow: the study's creator made no parent run in %.0f s: making one", PARENT_WAIT_SECONDS)
        return []

    @staticmethod
    def _find(client: Any, exp_id: str, study_name: str) -> list[Any]:
        name = study_name.replace("'", "\\'")
        runs = client.search_runs(
            [exp_id],
            filter_string=f"tags.`{rf.ROLE}` = 'sweep' and tags.`{rf.STUDY_NAME}` = '{name}'",
            max_results=50,
        )
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    @_safe
    def describe(self, params: Mapping[str, str], description: str | None) -> None:
        """The sweep's settings as params (search space, sampler, pruner, budget) and its description. MLflow keeps
        a param's first value: a resumed sweep that changed one (a larger n_trials) says so in the description."""
        logged = self.client.get_run(self.run_id).data.params
        new = {k: str(v)[:MAX_PARAM_LENGTH] for k, v in params.items() if k not in logged}
        changed = [
            f"{k}: {logged[k]} -> {str(v)[:MAX_PARAM_LENGTH]}"
            for k, v in params.items()
            if k in logged and logged[k] != str(v)[:MAX_PARAM_LENGTH]
        ]
        if new:
            from mlflow.entities import Param

            items = list(new.items())
            for i in range(0, len(items), 100):  # MLflow takes at most 100 params per batch
                self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i : i + 100]])
        if description:
            if changed:
                description += (
                    "\n\nChanged since the first sweep of this study (params keep the first value): "
                    + "; ".join(changed)
                )
            self.client.set_tag(self.run_id, rf.DESCRIPTION, description)

    # -- progress and summary
    @_safe
    def log_progress(self, study: Any, finished: list[int] | None = None) -> None:
        """The counts (step = trials finished) and, for each trial number in ``finished`` (the trials this process
        just told), a point of time to quality: the best first objective so far at that trial's end, step = seconds
        of sweep time then, timestamp = the trial's end (so MLflow's wall-time axis places it too)."""
        stats = study_report.study_stats(study)
        step = stats["n_finished"]
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(rf.metric(rf.SWEEP_SECTION, k), float(v), now, step)
            for k, v in stats.items()
            if isinstance(v, int | float)
        ]
        wanted = set(finished or ())
        for row in study_report.time_to_quality(study):
            if row["number"] in wanted and row["best_so_far"] is not None:
                metrics.append(
                    Metric(
                        rf.BEST_VALUE_BY_SECOND,
                        float(row["best_so_far"]),
                        int(row["ended_at"] * 1000),
                        int(round(row["elapsed_s"])),
                    )
                )
        self.client.log_batch(self.run_id, metrics=metrics)

    @_safe
    def finalize(
        self, study: Any, status: str = "FINISHED", plots: bool = True, stop_reason: str | None = None
    ) -> None:
        try:
            if stop_reason:
                self.client.set_tag(self.run_id, rf.STOP_REASON, stop_reason[:5000])
            self.log_progress(study)
            self._log_study_artifacts(study, plots, stop_reason)
        finally:
            self.client.set_terminated(self.run_id, status=status)

    @_safe
    def close_orphans(self, study: Any) -> None:
        """Child runs left RUNNING by a dead sweep process (SIGKILL, lost machine): their trial no longer runs in
        Optuna (fail_stale_trials failed it and re-queued its parameters), so say so in MLflow instead of leaving
        the run RUNNING forever."""
        from optuna.trial import TrialState

        from ..tracking.candidates import search_all

        trials = study.get_trials(deepcopy=False)
        running = {t.number for t in trials if t.state == TrialState.RUNNING}
        newest = max((t.number for t in trials), default=-1)  # a trial asked after this snapshot is not orphaned
        runs = search_all(
            self.client,
            [self.experiment_id],
            f"tags.`{rf.PARENT_RUN_ID}` = '{self.run_id}' and attributes.status = 'RUNNING'",
        )
        for r in runs:
            num = r.data.tags.get(rf.TRIAL_NUMBER)
            if num is None or int(num) in running or int(num) > newest:
                continue
            self.client.set_tag(r.info.run_id, rf.STATUS, "killed")
            self.client.set_tag(
                r.info.run_id,
                rf.FAILURE_REASON,
                f"the process running trial {num} died; Optuna marked the trial FAIL (not counted) and "
                "re-queued its parameters",
            )
            self.client.set_terminated(r.info.run_id, status="KILLED")
            log.warning("MLflow: child run %s of dead trial %s marked KILLED", r.info.run_id, num)

    def child_run_ids(self) -> dict[int, str]:
        """trial number -> child run id, from the child runs' tags (fallback when a trial has no mlflow_run_id)."""
        from ..tracking.candidates import search_all

        out: dict[int, str] = {}
        for r in search_all(self.client, [self.experiment_id], f"tags.`{rf.PARENT_RUN_ID}` = '{self.run_id}'"):
            num = r.data.tags.get(rf.TRIAL_NUMBER)
            if num is not None and num.isdigit():
                out.setdefault(int(num), r.info.run_id)
        return out

    def _log_study_artifacts(self, study: Any, plots: bool = True, stop_reason: str | None = None) -> None:
        run_ids = _safe(self.child_run_ids)() or {}

        def run_id_of(t: Any) -> str | None:
            found = t.user_attrs.get("mlflow_run_id") or run_ids.get(t.number)
            return str(found) if found else None

        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / rf.STUDY_DIR
            folder.mkdir()
            summary = study_report.write_study_folder(study, folder, run_id_of, plots, stop_reason)
            best = summary["best_trials"]
            if len(best) == 1 and len(study.directions) == 1:
                self.client.set_tag(self.run_id, rf.BEST_TRIAL_NUMBER, str(best[0]["number"]))
                if best[0]["mlflow_run_id"]:
                    self.client.set_tag(self.run_id, rf.BEST_RUN_ID, best[0]["mlflow_run_id"])
            self.client.log_artifacts(self.run_id, str(folder), artifact_path=rf.STUDY_DIR)


# ----------------------------------------------------------------------------------------------- grid multiruns
class MultirunParentCallback(Callback):
    """Hydra callback: an MLflow parent run for every multirun that is NOT an Optuna sweep of ours
    (the Optuna sweeper creates its own, per study). Jobs find it through ``trial_link.parent_run_id()``
    (a file in the sweep dir, so it works for any launcher sharing the file system)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._run: tuple[Any, str] | None = None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        if not self.enabled:
            return
        target = str(config.hydra.sweeper.get("_target_", ""))
        if target.startswith(OPTUNA_SWEEPER_TARGET_PREFIX):
            return
        try:
            uri, experiment, artifact_root = tracking_settings(config)
            client = _client(uri)
            exp_id = ensure_experiment(client, experiment, artifact_root)
            sweep_dir = str(config.hydra.sweep.dir)
            run = client.create_run(
                exp_id,
                run_name=f"multirun-{Path(sweep_dir).name}",
                tags={
                    rf.ROLE: "multirun",
                    rf.SWEEP_DIR: str(Path(sweep_dir).absolute()),
                    rf.OVERRIDES: " ".join(config.hydra.overrides.task),
                },
            )
            self._run = (client, run.info.run_id)
            run_owner.claim(client, run.info.run_id)
            write_parent_file(sweep_dir, run.info.run_id)
            atexit.register(self._abort)
        except Exception as exc:
            log.warning("MLflow parent run for the multirun not created: %s", exc)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        if self._run is None:
            return
        client, run_id = self._run
        try:
            exp_id = client.get_run(run_id).info.experiment_id
            from ..tracking.candidates import search_all

            children = list(search_all(client, [exp_id], f"tags.`{rf.PARENT_RUN_ID}` = '{run_id}'"))
            client.log_metric(run_id, rf.metric(rf.SWEEP_SECTION, "n_runs"), len(children))
            client.set_terminated(run_id, status="FINISHED")
        except Exception as exc:
            log.warning("MLflow parent run not closed: %s", exc)
        self._run = None

    def _abort(self) -> None:
        """The multirun died (a job raised): mark the parent FAILED instead of leaving it RUNNING."""
        if self._run is None:
            return
        client, run_id = self._run
        try:
            client.set_terminated(run_id, status="FAILED")
        except Exception:
            pass
        self._run = None
