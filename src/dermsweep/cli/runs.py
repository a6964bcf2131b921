"""`dermsweep runs`: the best runs of an experiment or sweep, and the hyperparameters that differ."""

from __future__ import annotations

from typing import Any

from ..liveness import STALE_AFTER_S
from ..tracking import run_format as rf
from ..training.weak_folds import told, told_retried
from .comparison_options import add_seed_noise
from .console import EXIT_ERROR, EXIT_OK, client, console, literal, literal_lines, print_json, printable
from .runs_table import (
    CONTEXT,
    DETAIL,
    KEEP_ALWAYS,
    OBJECTIVE,
    PARAM,
    Column,
    fit,
    metric_label,
    param_labels,
    render,
    short_value,
    shown_params,
)


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser("runs", help="table of the best runs of an experiment or sweep")
    common(p)
    p.add_argument("--sweep", help="a sweep's parent run id or study name")
    p.add_argument("--metric", help="rank by this metric (default: the runs' objective, e.g. val_balanced_accuracy)")
    p.add_argument("--limit", type=int, default=15, metavar="N", help="show the best N runs (default 15)")
    p.add_argument("--all", action="store_true", help="include pruned and failed runs")
    p.add_argument("--json", action="store_true", help="print the table as JSON (full run ids, every metric)")
    p.add_argument(
        "--paired",
        action="store_true",
        help="compare each run with the best (#1) image by image: the paired bootstrap difference on the validation "
        "or out-of-fold images both scored, by lesion, and each run's seed noise, with its 95%% interval (across 0: "
        "not told apart from #1)",
    )
    add_seed_noise(p)
    p.add_argument(
        "--width",
        type=int,
        metavar="COLUMNS",
        help="fit the table into this many columns (default: the terminal's width; 220 when not a terminal)",
    )
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
    from ..shipping.ranking import collect_runs

    table = collect_runs(client(args), args.experiment, args.sweep, args.metric, finished_only=not args.all)
    if args.metric and table.rows and not any(r.metric(table.metric) is not None for r in table.rows):
        valid = known_metrics(table.rows)
        console(stderr=True).print(
            literal(f"error: no run here has metric {args.metric!r}; choose one of: {', '.join(valid) or 'none'}")
        )
        return EXIT_ERROR
    shown = table.rows[: args.limit]
    paired: dict[str, Any] = {}
    noise = None
    if args.seed_noise is not None and not args.paired:
        console(stderr=True).print("error: --seed-noise widens --paired's intervals; add --paired")
        return EXIT_ERROR
    if args.paired and shown:
        if not rf.canonical(table.metric).startswith(rf.FINAL_VAL + "/"):
            console(stderr=True).print(
                literal(
                    f"error: --paired pairs validation predictions; rank by a validation metric, not {table.metric}"
                )
            )
            return EXIT_ERROR
        from ..shipping.seed_noise import for_table

        try:
            noise = for_table(client(args), table, args.seed_noise)
        except ValueError as exc:
            console(stderr=True).print(literal(f"error: {exc}"))
            return EXIT_ERROR
        paired = paired_with_best(args, table, shown, noise)
    if args.json:
        data = table.to_json()
        data["runs"] = data["runs"][: args.limit]
        for row in data["runs"]:
            if row["run_id"] in paired:
                row["paired_vs_best"] = paired[row["run_id"]]
        if noise is not None:
            data["seed_noise"] = noise.to_json()
        print_json(data)
        return EXIT_OK
    con = console(width=args.width)
    scope = f"sweep {args.sweep}" if args.sweep else f"experiment {args.experiment}"
    if not table.rows:
        con.print(literal(f"no {'finished ' if not args.all else ''}runs in {scope}"))
        return EXIT_OK
    arrow = "↑" if table.direction == "maximize" else "↓"
    width = args.width or con.width
    columns, ids = _columns(table, shown, show_status=args.all)
    if paired:
        cells = [paired_cell(paired.get(r.run_id, {})) for r in shown]
        columns.insert(3, Column("vs #1 [95%]", cells, OBJECTIVE, right=True))
    kept, dropped = fit(columns, width, ids)
    con.print(literal(f"{scope}: best runs by {table.metric} {arrow}"))
    con.print(literal_lines(render(kept)), soft_wrap=True)
    if len(table.rows) > args.limit:
        con.print(f"... {len(table.rows) - args.limit} more (--limit)")
    if len(ids.cells[0]) < len(shown[0].run_id):
        con.print(f"run ids: their first {len(ids.cells[0])} characters (unique here); --json has them whole")
    if dropped:
        con.print(literal(f"not shown at {width} columns: {', '.join(dropped)} (--width or --json)"))
    if not any(c.priority == PARAM for c in columns):
        con.print("(no hyperparameter differs between these runs)")
    for r in shown:
        if retried := r.tags.get(rf.RETRIED_FOLDS):
            con.print(literal(f"{r.run_id[: len(ids.cells[0])]}: {told_retried(retried)}"))
        if weak := r.tags.get(rf.WEAK_FOLDS):
            con.print(literal(f"{r.run_id[: len(ids.cells[0])]}: {told(weak)}"))
        if saw := r.teacher_saw_validation():
            con.print(literal(f"{r.run_id[: len(ids.cells[0])]}: {saw}"))
    if paired:
        con.print(
            literal(f"vs #1: {rf.base_name(table.metric)} minus #1's on the images both scored (paired, by lesion)")
        )
        if noise is not None:
            con.print(literal(f"with {noise.describe()}"))
        con.print("an interval across 0: not told apart from #1, given how far a rerun with another seed moves")
        errors = {run_id: result["error"] for run_id, result in paired.items() if "error" in result}
        for error in dict.fromkeys(errors.values()):
            runs = ", ".join(run_id[:12] for run_id, e in errors.items() if e == error)
            con.print(literal(f"not paired ({runs}): {error}"))
    return EXIT_OK


def paired_with_best(args, table, shown, noise) -> dict[str, dict[str, Any]]:
    """Each shown run's paired difference from the first, as JSON-ready dicts ({"error": why} where not paired)."""
    from ..quiet import import_tensorflow

    import_tensorflow()  # the logged predictions are read with the shipping code (Keras): its start-up lines kept off
    from ..shipping.validation_pairs import NotPaired, against

    best = shown[0].run_id
    finished = [r.run_id for r in shown[1:] if r.status == "finished"]  # pruned and failed runs predicted nothing
    try:
        results = against(client(args), best, finished, table.metric, table.direction, noise)
    except NotPaired as exc:
        return {r.run_id: {"error": f"#1 ({best[:12]}) cannot be paired: {exc}"} for r in shown}
    out: dict[str, dict[str, Any]] = {best: {"reference": True}}
    for run_id, d in results.items():
        out[run_id] = {"error": str(d)} if isinstance(d, NotPaired) else d.to_json()
    return out


def paired_cell(result: dict[str, Any]) -> str:
    if result.get("reference"):
        return "(#1)"
    if not result or "error" in result:
        return "-"
    return f"{result['difference']:+.3f} [{result['lo']:+.3f}, {result['hi']:+.3f}]"


def _columns(table, shown, show_status: bool) -> tuple[list[Column], Column]:
    """Every column the table could show, most important first, and the run id column (which may be shortened)."""
    test_metric = rf.test_twin(table.metric)

    def num(row, name: str) -> str:
        v = row.metric(name)
        return "-" if v is None else f"{v:.4f}"

    def interval(row, name: str) -> str:
        lo, hi = row.metric(rf.canonical(name) + "_lo95"), row.metric(rf.canonical(name) + "_hi95")
        return "-" if lo is None or hi is None else f"{lo:.3f}-{hi:.3f}"

    ids = Column("run id", [r.run_id for r in shown], KEEP_ALWAYS)
    columns = [
        Column("#", [str(i) for i in range(1, len(shown) + 1)], KEEP_ALWAYS, right=True),
        ids,
        Column(metric_label(table.metric), [num(r, table.metric) for r in shown], KEEP_ALWAYS, right=True),
    ]
    intervals = [interval(r, table.metric) for r in shown]
    if any(i != "-" for i in intervals):
        columns.append(Column("95% interval", intervals, OBJECTIVE, right=True))
    if test_metric != table.metric:
        columns.append(Column(metric_label(test_metric), [num(r, test_metric) for r in shown], OBJECTIVE, right=True))
    studies = [r.tags.get(rf.STUDY_NAME) or f"({r.role or 'run'})" for r in shown]
    columns.append(Column("study", studies, CONTEXT))
    if show_status:
        columns.append(Column("status", [r.status for r in shown], CONTEXT))
    keys = shown_params(table.differing, [r.params for r in shown])
    for key, label in param_labels(keys).items():
        columns.append(Column(label, [short_value(r.params.get(key)) for r in shown], PARAM))
    columns.append(Column("name", [printable(r.name) for r in shown], DETAIL))
    columns.append(Column("model", ["yes" if r.has_model else "no" for r in shown], DETAIL))
    columns.append(Column("split", [r.split_id or "-" for r in shown], DETAIL))
    return columns, ids


def known_metrics(rows) -> list[str]:
    """The run-level result metrics (final validation and test) the rows carry, in their current names."""
    names = {rf.canonical(k) for r in rows for k in r.metrics if rf.is_result(k)}
    return sorted(n for n in names if not n.endswith(("_lo95", "_hi95")))


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
