"""A sweep's study in numbers and pictures, without MLflow: its statistics, its clock (sweep time), time to quality,
and the files of the parent run's `study/` folder (summary.json, trials.csv, time_to_quality.csv/.png and Optuna's
plots as PNG). sweep.parent_run logs them; the sweeper reads the clock for its time budget.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..tracking import run_format as rf
from . import void

log = logging.getLogger(__name__)


def study_stats(study: Any) -> dict[str, Any]:
    import optuna

    S = optuna.trial.TrialState
    voided = void.numbers(study)
    counts = dict.fromkeys((S.COMPLETE, S.PRUNED, S.FAIL, S.RUNNING, S.WAITING), 0)
    for t in study.get_trials(deepcopy=False):
        if t.state == S.FAIL and t.number in voided:
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


def busy_intervals(study: Any) -> list[tuple[float, float]]:
    """The sweep's clock: merged (start, end) spans, in epoch seconds, during which at least one finished trial of
    the study ran. Gaps between invocations (before a resume) are left out, several workers' overlapping trials
    count once, and trials still RUNNING are left out (a dead sweep's RUNNING trial would otherwise tick forever),
    as are trials a dead sweep left behind (void "stale": they end when a later sweep noticed, not when they died)."""
    void_reasons = void.reasons(study)
    spans = sorted(
        (t.datetime_start.timestamp(), t.datetime_complete.timestamp())
        for t in study.get_trials(deepcopy=False)
        if t.datetime_start is not None and t.datetime_complete is not None and void_reasons.get(t.number) != void.STALE
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
    void_reasons = void.reasons(study)
    maximize = study.directions[0] == optuna.study.StudyDirection.MAXIMIZE
    spans = busy_intervals(study)
    done = sorted(
        (
            t
            for t in study.get_trials(deepcopy=False, states=(S.COMPLETE, S.PRUNED, S.FAIL))
            if t.number not in void_reasons and t.datetime_complete is not None
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


def write_plots(study: Any, folder: Path) -> list[str]:
    """Optuna's plots as PNG (matplotlib): optimisation history, parallel coordinate, parameter importances (from 2
    complete trials), Pareto front (2-3 objectives). Not Plotly HTML: each file carried its own 4.8 MB copy of
    plotly.js, and trials.csv holds the data. Returns the names written."""
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
                ax = getattr(optuna.visualization.matplotlib, fn)(study, **kw)
                figure = ax.figure if hasattr(ax, "figure") else ax.flat[0].figure
                figure.savefig(folder / f"{name}.png", dpi=100, bbox_inches="tight")
                plt.close(figure)
                written.append(f"{name}.png")
            except Exception as exc:
                log.warning("plot %s skipped: %s", name, exc)
    return written


def write_study_folder(
    study: Any,
    folder: Path,
    run_id_of: Callable[[Any], str | None],
    plots: bool = True,
    stop_reason: str | None = None,
) -> dict[str, Any]:
    """Write the study's files into ``folder`` (summary.json, trials.csv, time to quality, plots); returns the
    summary. ``run_id_of(trial)``: the MLflow run that trained a trial, or None."""
    import optuna

    multi = len(study.directions) > 1
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
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
            {"number": t.number, "values": t.values, "params": t.params, "mlflow_run_id": run_id_of(t)} for t in best
        ],
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    df = study.trials_dataframe()
    if not df.empty:
        # by number: other workers may add trials between the two reads
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        void_reasons = void.reasons(study)
        df["mlflow_run_id"] = [run_id_of(trials[n]) if n in trials else None for n in df["number"]]
        # surplus / interrupted / stale / killed trials: shown as FAIL by Optuna, not counted by the sweep
        df["void"] = [void_reasons.get(int(n), "") for n in df["number"]]
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
    return summary
