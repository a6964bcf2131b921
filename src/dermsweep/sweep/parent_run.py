"""MLflow parent runs for multiruns: one per Optuna sweep (reused on resume) and one per plain grid multirun.

Everything goes through ``MlflowClient`` (never ``mlflow.start_run``), so no MLflow run becomes "active" in the
sweeper's process: in-process jobs (basic launcher) start their own child run with
``mlflow.start_run(parent_run_id=trial.parent_run_id(), ...)``. MLflow requires the parent to be RUNNING then; a
reused parent is set back to RUNNING while the sweep runs.

Logging here is best-effort: a tracking hiccup logs a warning and never stops a sweep.
"""

from __future__ import annotations

import atexit
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from ..tracking import run_format as rf
from ..tracking import run_owner
from ..tracking.store import ensure_experiment
from .trial_link import PARENT_RUN_FILE, VOID_PREFIX

log = logging.getLogger(__name__)

OPTUNA_SWEEPER_TARGET_PREFIX = "hydra_plugins.dermsweep_optuna_sweeper"


def tracking_settings(config: Any) -> tuple[str | None, str, str | None]:
    """(tracking URI, experiment name, local artifact root) from a composed dermsweep config."""
    from omegaconf import OmegaConf

    uri = OmegaConf.select(config, "tracking.uri", default=None)
    experiment = OmegaConf.select(config, "experiment", default=None) or "Default"
    artifact_root = OmegaConf.select(config, "tracking.artifact_root", default=None)
    return uri, str(experiment), artifact_root


def sweep_tags(storage: str, directions: list[str], n_trials: int) -> dict[str, str]:
    """Tags of an Optuna sweep's parent run: where its study lives and what it asks for."""
    return {rf.OPTUNA_STORAGE: storage, rf.DIRECTIONS: ",".join(directions), rf.N_TRIALS: str(n_trials)}


def _client(uri: str | None) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri)


def write_parent_file(sweep_dir: str | Path, run_id: str) -> None:
    d = Path(str(sweep_dir)).absolute()
    d.mkdir(parents=True, exist_ok=True)
    (d / PARENT_RUN_FILE).write_text(run_id)


def _safe(fn: Any) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            log.warning("MLflow parent run: %s failed: %s", fn.__name__, exc)
            return None

    wrapper.__name__ = fn.__name__
    return wrapper


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
    ) -> SweepParent:
        client = _client(uri)
        exp_id = ensure_experiment(client, experiment, artifact_root)
        found = cls._find(client, exp_id, study_name)
        if found:
            run_id = found[0].info.run_id
            # Claimed before it is RUNNING again: its dead earlier workers' records must not get it reaped.
            run_owner.claim(client, run_id)
            if found[0].info.status != "RUNNING":
                client.update_run(run_id, status="RUNNING")
            log.info("MLflow: resuming parent run %s of study %s", run_id, study_name)
        else:
            run = client.create_run(
                exp_id,
                run_name=study_name,
                tags={rf.ROLE: "sweep", rf.STUDY_NAME: study_name, **(tags or {})},
            )
            run_id = run.info.run_id
            # Two sweep processes may have created one each at the same moment: keep the oldest, drop ours.
            found = cls._find(client, exp_id, study_name)
            if found and found[0].info.run_id != run_id:
                client.delete_run(run_id)
                run_id = found[0].info.run_id
            run_owner.claim(client, run_id)  # each worker is an owner: the run is reaped once all of them died
            log.info("MLflow: parent run %s for study %s", run_id, study_name)
        for k, v in (tags or {}).items():
            client.set_tag(run_id, k, v)
        return cls(client, run_id, exp_id)

    @staticmethod
    def _find(client: Any, exp_id: str, study_name: str) -> list[Any]:
        name = study_name.replace("'", "\\'")
        runs = client.search_runs(
            [exp_id],
            filter_string=f"tags.`{rf.ROLE}` = 'sweep' and tags.`{rf.STUDY_NAME}` = '{name}'",
            max_results=50,
        )
        return sorted(runs, key=lambda r: (r.info.start_time or 0, r.info.run_id))

    # -- progress and summary
    @_safe
    def log_progress(self, study: Any) -> None:
        stats = study_stats(study)
        step = stats["n_finished"]
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(rf.metric(rf.SWEEP_SECTION, k), float(v), now, step) for k, v in stats.items() if v is not None
        ]
        self.client.log_batch(self.run_id, metrics=metrics)

    @_safe
    def finalize(self, study: Any, status: str = "FINISHED", plots: bool = True) -> None:
        try:
            self.log_progress(study)
            self._log_study_artifacts(study, plots)
        finally:
            self.client.set_terminated(self.run_id, status=status)

    @_safe
    def close_orphans(self, study: Any) -> None:
        """Child runs left RUNNING by a dead sweep process (SIGKILL, lost machine): their trial no longer runs in
        Optuna (fail_stale_trials failed it and re-queued its parameters), so say so in MLflow instead of leaving
        the run RUNNING forever."""
        from optuna.trial import TrialState

        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{rf.PARENT_RUN_ID}` = '{self.run_id}' and attributes.status = 'RUNNING'",
            max_results=5000,
        )
        for r in runs:
            num = r.data.tags.get(rf.TRIAL_NUMBER)
            if num is None or int(num) in running:
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
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{rf.PARENT_RUN_ID}` = '{self.run_id}'",
            max_results=5000,
        )
        out: dict[int, str] = {}
        for r in runs:
            num = r.data.tags.get(rf.TRIAL_NUMBER)
            if num is not None and num.isdigit():
                out.setdefault(int(num), r.info.run_id)
        return out

    def _log_study_artifacts(self, study: Any, plots: bool = True) -> None:
        import optuna

        multi = len(study.directions) > 1
        complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        run_ids = _safe(self.child_run_ids)() or {}

        def run_id_of(t: Any) -> str | None:
            return t.user_attrs.get("mlflow_run_id") or run_ids.get(t.number)

        best = []
        if complete:
            best = list(study.best_trials) if multi else [study.best_trial]
        summary = {
            "study_name": study.study_name,
            "directions": [d.name.lower() for d in study.directions],
            "metric_names": study.metric_names,
            **study_stats(study),
            "best_trials": [
                {"number": t.number, "values": t.values, "params": t.params, "mlflow_run_id": run_id_of(t)}
                for t in best
            ],
        }
        if best and not multi:
            self.client.set_tag(self.run_id, rf.BEST_TRIAL_NUMBER, str(best[0].number))
            rid = run_id_of(best[0])
            if rid:
                self.client.set_tag(self.run_id, rf.BEST_RUN_ID, rid)
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / rf.STUDY_DIR
            folder.mkdir()
            (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
            df = study.trials_dataframe()
            if not df.empty:
                # by number: other workers may add trials between the two reads
                trials = {t.number: t for t in study.get_trials(deepcopy=False)}
                void = {k[len(VOID_PREFIX) :]: v for k, v in study.user_attrs.items() if k.startswith(VOID_PREFIX)}
                df["mlflow_run_id"] = [run_id_of(trials[n]) if n in trials else None for n in df["number"]]
                # surplus / interrupted / stale / killed trials: shown as FAIL by Optuna, not counted by the sweep
                df["void"] = [void.get(str(n), "") for n in df["number"]]
            df.to_csv(folder / "trials.csv", index=False)
            if plots:
                write_plots(study, folder)
            self.client.log_artifacts(self.run_id, str(folder), artifact_path=rf.STUDY_DIR)


def study_stats(study: Any) -> dict[str, Any]:
    import optuna

    S = optuna.trial.TrialState
    void = {k for k in study.user_attrs if k.startswith(VOID_PREFIX)}
    counts = dict.fromkeys((S.COMPLETE, S.PRUNED, S.FAIL, S.RUNNING, S.WAITING), 0)
    for t in study.get_trials(deepcopy=False):
        if t.state == S.FAIL and f"{VOID_PREFIX}{t.number}" in void:
            continue
        counts[t.state] = counts.get(t.state, 0) + 1
    stats: dict[str, Any] = {
        "n_complete": counts[S.COMPLETE],
        "n_pruned": counts[S.PRUNED],
        "n_failed": counts[S.FAIL],
        "n_running": counts[S.RUNNING],
        "n_finished": counts[S.COMPLETE] + counts[S.PRUNED] + counts[S.FAIL],
        "best_value": None,
    }
    if counts[S.COMPLETE] and len(study.directions) == 1:
        stats["best_value"] = study.best_value
    elif counts[S.COMPLETE]:
        stats["n_pareto"] = len(study.best_trials)
    return stats


def write_plots(study: Any, folder: Path) -> list[str]:
    """Optuna plots as HTML (plotly, self-contained) and PNG (matplotlib). Returns the names written."""
    import optuna

    written: list[str] = []
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return written
    multi = len(study.directions) > 1
    names = study.metric_names or [f"objective_{i}" for i in range(len(study.directions))]
    target_kw: dict[str, Any] = {}
    if multi:
        target_kw = {"target": (lambda t: t.values[0]), "target_name": names[0]}
    plots: list[tuple[str, str, dict[str, Any]]] = [
        ("optimization_history", "plot_optimization_history", target_kw),
        ("parallel_coordinate", "plot_parallel_coordinate", target_kw),
    ]
    if len(complete) >= 2:
        plots.append(("param_importances", "plot_param_importances", target_kw))
    if multi and len(study.directions) in (2, 3):
        plots.append(("pareto_front", "plot_pareto_front", {}))
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    for name, fn, kw in plots:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                fig = getattr(optuna.visualization, fn)(study, **kw)
                fig.write_html(str(folder / f"{name}.html"), include_plotlyjs=True)
                written.append(f"{name}.html")
            except Exception as exc:
                log.warning("plot %s (html) skipped: %s", name, exc)
            try:
                ax = getattr(optuna.visualization.matplotlib, fn)(study, **kw)
                figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
                plt.close(figure)
                written.append(f"{name}.png")
            except Exception as exc:
                log.warning("plot %s (png) skipped: %s", name, exc)
    return written


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
            children = client.search_runs(
                [exp_id], filter_string=f"tags.`{rf.PARENT_RUN_ID}` = '{run_id}'", max_results=5000
            )
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
