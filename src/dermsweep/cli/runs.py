"""`dermsweep runs`: the best runs of an experiment or sweep, and the hyperparameters that differ."""

from __future__ import annotations

from typing import Any

from ..liveness import STALE_AFTER_S
from ..tracking import run_format as rf
from .console import EXIT_ERROR, EXIT_OK, client, console, print_json


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser("runs", help="table of the best runs of an experiment or sweep")
    common(p)
    p.add_argument("--sweep", help="a sweep's parent run id or study name")
    p.add_argument("--metric", help="rank by this metric (default: the runs' objective, e.g. val_balanced_accuracy)")
    p.add_argument("--limit", type=int, default=15)
    p.add_argument("--all", action="store_true", help="include pruned and failed runs")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--reap",
        action="store_true",
        help="mark runs and sweep trials left RUNNING by dead processes (in every experiment) KILLED, with the "
        "reason, then list them",
    )
    p.add_argument(
        "--stale-after",
        type=float,
        default=STALE_AFTER_S,
        metavar="SECONDS",
        help=f"with --reap: a process on another machine is dead after this long without heartbeat "
        f"(default {STALE_AFTER_S:.0f}; its own machine knows at once)",
    )
    p.set_defaults(fn=run)


def run(args) -> int:
    if args.reap:
        return reap(args)
    from rich.table import Table

    from ..shipping.ranking import collect_runs

    table = collect_runs(client(args), args.experiment, args.sweep, args.metric, finished_only=not args.all)
    if args.json:
        data = table.to_json()
        data["runs"] = data["runs"][: args.limit]
        print_json(data)
        return EXIT_OK
    con = console()
    if not table.rows:
        con.print(
            f"no {'finished ' if not args.all else ''}runs in "
            f"{'sweep ' + args.sweep if args.sweep else 'experiment ' + args.experiment}"
        )
        return EXIT_OK
    arrow = "↑" if table.direction == "maximize" else "↓"
    scope = f"sweep {args.sweep}" if args.sweep else f"experiment {args.experiment}"
    t = Table(title=f"{scope}: best runs by {table.metric} {arrow}", title_justify="left")
    test_metric = rf.test_twin(table.metric)
    for col in ("#", "run", "id", "status", table.metric, test_metric, "split", "model"):
        t.add_column(col, justify="right" if col in ("#", table.metric, test_metric) else "left")
    for key in table.differing:
        t.add_column(key)
    for i, r in enumerate(table.rows[: args.limit], 1):

        def num(k: str, row=r) -> str:
            v = row.metric(k)
            return "-" if v is None else f"{v:.4f}"

        t.add_row(
            str(i),
            r.name,
            r.run_id[:8],
            r.status,
            num(table.metric),
            num(test_metric),
            r.split_id or "-",
            "yes" if r.has_model else "no",
            *[_short(r.params.get(k, "-")) for k in table.differing],
        )
    con.print(t)
    if not table.differing:
        con.print("(no hyperparameter differs between these runs)")
    if len(table.rows) > args.limit:
        con.print(f"... {len(table.rows) - args.limit} more (--limit)")
    return EXIT_OK


def _short(value: str) -> str:
    """Parameter values for a table: floats to 4 significant digits, long strings cut."""
    try:
        f = float(value)
        if "." in value or "e" in value.lower():
            return f"{f:.4g}"
    except (TypeError, ValueError):
        pass
    return value if len(value) <= 24 else value[:23] + "…"


def reap(args) -> int:
    """`runs --reap`: what dead processes left RUNNING, marked in MLflow and in the sweeps' Optuna studies."""
    from ..sweep.reaper import reap as reap_all

    if args.stale_after < 0:
        console(stderr=True).print("error: --stale-after must be 0 or more seconds")
        return EXIT_ERROR
    report = reap_all(client(args, reap=False), args.stale_after)
    if args.json:
        print_json(report.to_json())
        return EXIT_OK
    con = console()
    for r in report.runs:
        con.print(f"run {r.run_id} ({r.name or r.role or 'run'}): KILLED, {r.reason}")
    for study, number in report.trials:
        con.print(f"study {study}: trial {number} FAIL (not counted, parameters re-queued): its process died")
    for line in report.skipped:
        con.print(f"not checked: {line}")
    if not report.runs and not report.trials:
        con.print("nothing left RUNNING by a dead process")
    return EXIT_OK
