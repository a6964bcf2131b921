"""`dermsweep evaluate DATA`: score a model on any labelled set (HAM10000, ISIC 2018 Task 3, one folder per class),
print the figures and record them as an MLflow evaluation run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..quiet import import_tensorflow, redirected
from ..shipping.defaults import DEFAULT_MODEL_URI
from ..shipping.defaults import EVALUATION_EXPERIMENT as DEFAULT_EXPERIMENT
from .console import EXIT_OK, client, console, print_json

SHOWN_SKIPPED = 5  # skipped files printed; the run's artifact lists them all


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score a model on a labelled set (HAM10000, ISIC 2018 Task 3 CSV, one folder per class) and log it",
    )
    common(p, experiment=False)
    p.add_argument(
        "data",
        metavar="DATA",
        help="folder: HAM10000 layout (HAM10000_metadata.csv), ISIC 2018 Task 3 (images + *GroundTruth*.csv, "
        "here or one folder down), or one sub-folder of images per class",
    )
    p.add_argument("--model", default=DEFAULT_MODEL_URI, help=f"model reference (default {DEFAULT_MODEL_URI})")
    p.add_argument(
        "--experiment",
        default=DEFAULT_EXPERIMENT,
        help=f"MLflow experiment of the evaluation run (default {DEFAULT_EXPERIMENT})",
    )
    p.add_argument("--no-log", action="store_true", help="print only; record no MLflow run")
    p.add_argument("--batch-size", type=int, default=32, help="images per prediction batch (default 32)")
    p.add_argument("--max-images", type=int, help="a quick look: a fixed stratified subset of at most N images")
    p.add_argument("--json", action="store_true", help="print the report as JSON (stdout is then pure JSON)")
    p.set_defaults(fn=run)


def run(args) -> int:
    from ..shipping.evaluate import evaluate
    from ..tracking.store import connect

    err = console(stderr=True)
    import_tensorflow()
    in_store = not (args.model.endswith(".keras") or Path(args.model).is_dir())
    if in_store:
        tracking = client(args)
    elif not args.no_log:  # a model file's evaluation is still recorded: in the local store, made if need be
        tracking = connect(args.tracking_uri)
    else:
        tracking = None
    with redirected(1, 2):  # stdout stays clean for --json: library chatter goes to stderr
        report = evaluate(
            args.data,
            args.model,
            tracking,
            batch_size=args.batch_size,
            max_images=args.max_images,
            log=not args.no_log,
            experiment=args.experiment,
            progress=lambda m: err.print(f"[dim]{m}[/]"),
        )
    if args.json:
        print_json(report.to_json())
    else:
        show(report)
        if report.run_id and tracking is not None:
            from ..tracking.store import ui_hint

            experiment = tracking.get_experiment_by_name(args.experiment)
            console().print(f"logged: evaluation run {report.run_id} in experiment {args.experiment!r}")
            if experiment is not None:
                console().print(f"  {ui_hint(str(tracking.tracking_uri), experiment.experiment_id, report.run_id)}")
    return EXIT_OK


def show(report) -> None:
    from rich.table import Table

    con = console()
    con.print(
        f"evaluation of {report.model_description} on {report.data}\n"
        f"  {report.layout} layout, {report.n_images} images, {len(report.skipped)} skipped "
        f"(dataset {report.dataset_name}, digest {report.dataset_digest})"
    )
    m, watched = report.metrics, report.decision.class_name
    t = Table(title="overall", title_justify="left")
    t.add_column("metric")
    t.add_column("value [95% interval]", justify="right")
    for key, label in (
        ("balanced_accuracy", "balanced accuracy"),
        ("accuracy", "accuracy"),
        ("macro_f1", "macro F1"),
        ("macro_auc", "macro AUC"),
        ("ece", f"calibration error (ECE, {report.reliability['bins']} bins)"),
    ):
        t.add_row(label, _fmt(m.get(key), report.intervals.get(key)))
    if watched:
        at = "at the operating point" if report.decision.kind == "operating_point" else "at argmax"
        for rate in ("sensitivity", "specificity"):
            key = f"{watched}_{rate}"
            t.add_row(f"{watched} {rate} {at}", _fmt(m.get(key), report.intervals.get(key)))
    con.print(t)
    con.print(f"{watched or 'melanoma'} figures: {report.decision.describe()}")

    t = Table(title="per class (argmax)", title_justify="left")
    for col in ("class", "images", "precision", "recall", "F1"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for name, s in report.per_class.items():
        t.add_row(name, str(s["support"]), _fmt(s["precision"]), _fmt(s["recall"]), _fmt(s["f1"]))
    con.print(t)

    t = Table(title="confusion matrix (rows: true, columns: predicted)", title_justify="left")
    t.add_column("")
    for name in report.class_names:
        t.add_column(name, justify="right")
    for name, row in zip(report.class_names, report.confusion, strict=True):
        t.add_row(name, *[str(v) for v in row])
    con.print(t)

    for line in report.skipped[:SHOWN_SKIPPED]:
        con.print(f"skipped: {line}")
    if len(report.skipped) > SHOWN_SKIPPED:
        con.print(f"... {len(report.skipped) - SHOWN_SKIPPED} more skipped (all listed in the run's artifacts)")
    for note in report.notes:
        con.print(f"note: {note}")


def _fmt(value: float | None, interval: list[float] | None = None) -> str:
    """0.7210, or 0.7210 [0.6740, 0.7690] with its 95% bootstrap interval."""
    if value is None:
        return "n/a"
    return f"{value:.4f}" + (f" [{interval[0]:.4f}, {interval[1]:.4f}]" if interval else "")
