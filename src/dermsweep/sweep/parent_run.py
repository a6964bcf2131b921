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
# A trial's user attr naming where its enqueued (warm-start) configuration came from; the sweeper sets it.
WARM_START_ATTR = rf.WARM_START
# How long a worker that created a sweep's parent run waits before checking whether another worker made one too.
PARENT_SETTLE_SECONDS = 3.0


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
            # Several workers starting together may each have created one. A run's start time is taken before it
            # is stored, so a search made at once can miss an older one still being written (seen on a loaded
            # machine: two parents). After a pause every worker sees the same set and keeps the same, the oldest.
            time.sleep(PARENT_SETTLE_SECONDS)
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
    def log_progress(self, study: Any, finished: list[int] | None = None) -> None:
        """The counts (step = trials finished) and, for each trial number in ``finished`` (the trials this process
        just told), a point of time to quality: the best first objective so far at that trial's end, step = seconds
        of sweep time then, timestamp = the trial's end (so MLflow's wall-time axis places it too)."""
        stats = study_stats(study)
        step = stats["n_finished"]
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(rf.metric(rf.SWEEP_SECTION, k), float(v), now, step)
            for k, v in stats.items()
            if isinstance(v, int | float)
        ]
        wanted = set(finished or ())
        for row in time_to_quality(study):
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

        trials = study.get_trials(deepcopy=False)
        running = {t.number for t in trials if t.state == TrialState.RUNNING}
        newest = max((t.number for t in trials), default=-1)  # a trial asked after this snapshot is not orphaned
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{rf.PARENT_RUN_ID}` = '{self.run_id}' and attributes.status = 'RUNNING'",
            max_results=5000,
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

    def _log_study_artifacts(self, study: Any, plots: bool = True, stop_reason: str | None = None) -> None:
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
            "stop_reason": stop_reason,
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
            rows = time_to_quality(study)
            write_time_to_quality_table(rows, folder / Path(rf.TIME_TO_QUALITY_TABLE).name)
            if plots:
                write_plots(study, folder)
                if rows:
                    try:
                        draw_time_to_quality(rows, study).savefig(
                            folder / Path(rf.TIME_TO_QUALITY_FIGURE).name, dpi=100, bbox_inches="tight"
                        )
                    except Exception as exc:
                        log.warning("plot time_to_quality skipped: %s", exc)
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
        "elapsed_minutes": round(sweep_seconds(study) / 60.0, 3),
    }
    if counts[S.COMPLETE] and len(study.directions) == 1:
        stats["best_value"] = study.best_value
    elif counts[S.COMPLETE]:
        stats["n_pareto"] = len(study.best_trials)
    return stats


# ----------------------------------------------------------------------------------------------- sweep time
def _void_reasons(study: Any) -> dict[int, str]:
    return {int(k[len(VOID_PREFIX) :]): str(v) for k, v in study.user_attrs.items() if k.startswith(VOID_PREFIX)}


def busy_intervals(study: Any) -> list[tuple[float, float]]:
    """The sweep's clock: merged (start, end) spans, in epoch seconds, during which at least one finished trial of
    the study ran. Gaps between invocations (before a resume) are left out, several workers' overlapping trials
    count once, and trials still RUNNING are left out (a dead sweep's RUNNING trial would otherwise tick forever),
    as are trials a dead sweep left behind (void "stale": they end when a later sweep noticed, not when they died)."""
    void = _void_reasons(study)
    spans = sorted(
        (t.datetime_start.timestamp(), t.datetime_complete.timestamp())
        for t in study.get_trials(deepcopy=False)
        if t.datetime_start is not None and t.datetime_complete is not None and void.get(t.number) != "stale"
    )
    merged: list[tuple[float, float]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, max(start, end)))
    return merged


def sweep_seconds(study: Any, at: float | None = None, intervals: list[tuple[float, float]] | None = None) -> float:
    """Seconds of sweep time (see busy_intervals) up to the moment ``at`` (epoch seconds; None = all of it)."""
    spans = busy_intervals(study) if intervals is None else intervals
    if at is None:
        return sum(end - start for start, end in spans)
    return sum(min(end, at) - start for start, end in spans if start < at)


def time_to_quality(study: Any) -> list[dict[str, Any]]:
    """One row per finished trial that counts (void ones left out), in the order they ended: its number, state,
    sweep time at its end (elapsed_s; ended_at in epoch seconds), its first objective (a pruned trial: its last
    reported value, at pruned_at_step; a failed one: none), and the best first objective of the COMPLETE trials
    ended by then (best_so_far; multi-objective studies: the first objective)."""
    import optuna

    S = optuna.trial.TrialState
    void = _void_reasons(study)
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    spans = busy_intervals(study)
    done = sorted(
        (
            t
            for t in study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED, S.FAIL))
            if t.number not in void and t.datetime_complete is not None
        ),
        key=lambda t: (t.datetime_complete, t.number),
    )
    rows: list[dict[str, Any]] = []
    best: float | None = None
    for t in done:
        ended = t.datetime_complete.timestamp()
        value: float | None = None
        pruned_at: int | None = None
        if t.state == S.COMPLETE and t.values:
            value = float(t.values[0])
            if best is None or (value > best if maximize else value < best):
                best = value
        elif t.state == S.PRUNED and t.intermediate_values:
            pruned_at = t.last_step
            value = float(t.intermediate_values[pruned_at])
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "ended_at": ended,
                "elapsed_s": sweep_seconds(study, ended, spans),
                "value": value,
                "pruned_at_step": pruned_at,
                "best_so_far": best,
                "warm_start": t.user_attrs.get(rf.WARM_START, ""),
            }
        )
    return rows


def write_time_to_quality_table(rows: list[dict[str, Any]], path: Path) -> None:
    """time_to_quality.csv: the rows of time_to_quality with elapsed minutes and the end as ISO time."""
    import csv
    import datetime

    columns = ["number", "state", "elapsed_minutes", "value", "best_so_far", "pruned_at_step", "ended", "warm_start"]
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            writer.writerow(
                {
                    **{k: r[k] for k in ("number", "state", "value", "best_so_far", "pruned_at_step", "warm_start")},
                    "elapsed_minutes": round(r["elapsed_s"] / 60.0, 4),
                    "ended": datetime.datetime.fromtimestamp(r["ended_at"]).isoformat(timespec="seconds"),
                }
            )


def draw_time_to_quality(rows: list[dict[str, Any]], study: Any) -> Any:
    """Best-so-far first objective (a step line) against sweep minutes, each complete trial's value as a dot,
    pruned trials' last reported values as crosses, failed trials as ticks under the axis. A matplotlib Figure
    made without pyplot."""
    from matplotlib.figure import Figure

    name = (study.metric_names or ["objective"])[0]
    fig = Figure(figsize=(7.5, 4.2))
    ax = fig.add_subplot()
    minutes = [r["elapsed_s"] / 60.0 for r in rows]
    best = [(m, r["best_so_far"]) for m, r in zip(minutes, rows, strict=True) if r["best_so_far"] is not None]
    if best:
        xs, ys = zip(*best, strict=True)
        ax.step(xs, ys, where="post", color="tab:blue", linewidth=2, label="best so far")
    for state, style in (
        ("COMPLETE", dict(marker="o", color="tab:blue", alpha=0.6, label="complete trial")),
        ("PRUNED", dict(marker="x", color="tab:orange", label="pruned trial (last reported value)")),
    ):
        pts = [
            (m, r["value"])
            for m, r in zip(minutes, rows, strict=True)
            if r["state"] == state and r["value"] is not None
        ]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.scatter(xs, ys, **style)
    failed = [m for m, r in zip(minutes, rows, strict=True) if r["state"] == "FAIL"]
    if failed:
        ax.scatter(
            failed,
            [0.0] * len(failed),
            marker="|",
            s=120,
            color="tab:red",
            label="failed trial",
            transform=ax.get_xaxis_transform(),
            clip_on=False,
        )
    direction = study.directions[0].name.lower()
    ax.set_xlabel("sweep time (minutes; gaps between invocations left out)")
    ax.set_ylabel(f"{name} ({direction})")
    ax.set_title(f"{study.study_name}: time to quality ({len(rows)} trials)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return fig


# ----------------------------------------------------------------------------------------------- warm start
def best_runs(
    uri: str | None,
    experiment: str,
    metric: str,
    direction: str,
    top_k: int,
    filter_string: str | None = None,
) -> list[tuple[str, float, dict[str, str]]]:
    """The ``top_k`` best FINISHED runs of an MLflow experiment by ``metric`` (any spelling rf.read accepts, e.g.
    val_balanced_accuracy = final_val/balanced_accuracy, else the metric's exact name), sweep and multirun parent
    runs left out: [(run id, value, params)], best first. Raises ValueError when the experiment does not exist."""
    import math

    client = _client(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"experiment {experiment!r} not found in the tracking store {client.tracking_uri}")
    wanted = "attributes.status = 'FINISHED'"
    if filter_string:
        wanted = f"{wanted} and {filter_string}"
    found: list[tuple[str, float, dict[str, str]]] = []
    page: str | None = None
    while True:
        runs = client.search_runs([exp.experiment_id], filter_string=wanted, max_results=1000, page_token=page)
        for r in runs:
            if r.data.tags.get(rf.ROLE) in ("sweep", "multirun"):
                continue
            value = rf.read(r.data.metrics, metric)
            if value is None:
                value = r.data.metrics.get(metric)
            if value is None or not math.isfinite(value):
                continue
            found.append((r.info.run_id, float(value), dict(r.data.params)))
        page = runs.token
        if not page:
            break
    found.sort(key=lambda x: x[1], reverse=direction == "maximize")
    return found[: max(0, int(top_k))]


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
