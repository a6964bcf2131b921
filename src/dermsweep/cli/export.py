"""`dermsweep export`: SavedModel, TFLite f32/f16/int8 and ONNX, with a size/latency/accuracy table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..quiet import import_tensorflow, redirected
from ..shipping.defaults import DEFAULT_MODEL_URI, FORMATS
from .console import EXIT_OK, client, console, print_json


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser("export", help="SavedModel, TFLite f32/f16/int8 and ONNX, with size/latency/accuracy")
    common(p, experiment=False)
    p.add_argument("--model", default=DEFAULT_MODEL_URI, help=f"model reference (default {DEFAULT_MODEL_URI})")
    p.add_argument("--out", help="output folder (default outputs/export/<time>)")
    p.add_argument(
        "--data-dir",
        help="labelled images (HAM10000 layout, ISIC 2018 CSV, or one sub-folder per class) "
        "to evaluate and calibrate on, instead of the run's own split",
    )
    p.add_argument("--calibration-dir", help="images to calibrate int8 on (default: the run's training split)")
    p.add_argument(
        "--calibration-count", type=int, default=150, metavar="N", help="images to calibrate int8 on (default 150)"
    )
    p.add_argument("--runs", type=int, default=50, help="timed batch-1 calls per format (median reported)")
    p.add_argument(
        "--int8-io",
        choices=["float", "int8"],
        default="float",
        help="int8 model's input/output type (default float: int8 inside, float32 at the edges)",
    )
    p.add_argument(
        "--int8-tolerance",
        type=float,
        default=0.01,
        help="int8: largest |validation balanced accuracy - float's| accepted (default 0.01 = 1 point)",
    )
    p.add_argument(
        "--int8-min-agreement",
        type=float,
        default=0.0,
        help="int8: smallest share of validation images with float's top-1 class (default 0: balanced accuracy "
        "within --int8-tolerance decides)",
    )
    p.add_argument(
        "--int8-max-float-layers",
        type=int,
        default=16,
        help="int8: most layers the search may keep float (default 16)",
    )
    p.add_argument(
        "--int8-float-layers",
        type=int,
        help="int8: keep exactly this many of the worst layers float, without the search on validation",
    )
    p.add_argument("--formats", help=f"comma-separated subset of: {', '.join(FORMATS)} (keras always; default all)")
    p.add_argument("--no-log", action="store_true", help="do not log the export to the source run")
    p.add_argument("--json", action="store_true", help="print the comparison table as JSON")
    p.set_defaults(fn=run)


def run(args) -> int:
    from rich.table import Table

    from ..shipping.export import export, fmt, human_size, int8_lines
    from ..shipping.int8 import Int8Options

    err, con = console(stderr=True), console()
    formats = _formats(args.formats)
    int8 = Int8Options(
        tolerance=args.int8_tolerance,
        min_agreement=args.int8_min_agreement,
        max_float_layers=args.int8_max_float_layers,
        float_layers=args.int8_float_layers,
    )
    import_tensorflow()
    tracking = client(args) if not args.model.endswith(".keras") else None
    out = args.out or str(Path("outputs") / "export" / time.strftime("%Y%m%d-%H%M%S"))
    with redirected(1, 2):
        report = export(
            args.model,
            out,
            tracking,
            data_dir=args.data_dir,
            calibration_dir=args.calibration_dir,
            calibration_count=args.calibration_count,
            runs=args.runs,
            int8_io=args.int8_io,
            log_to_run=not args.no_log,
            formats=formats,
            progress=lambda m: err.print(f"[dim]{m}[/]"),
            int8=int8,
        )
    if args.json:
        print_json(report.to_json())
        return EXIT_OK
    t = Table(title=f"export of {args.model} -> {report.out_dir}", title_justify="left")
    for col in ("format", "file", "size", "latency ms (b=1)", "val bal. acc", "Δ vs keras", "agree w/ keras"):
        t.add_column(col, justify="left" if col in ("format", "file") else "right")
    keras = report.row("keras")
    for r in report.rows:
        delta = (
            None
            if r.balanced_accuracy is None or keras is None or keras.balanced_accuracy is None
            else r.balanced_accuracy - keras.balanced_accuracy
        )
        t.add_row(
            r.format,
            r.path,
            human_size(r.size_bytes),
            fmt(r.latency_ms, ".2f"),
            fmt(r.balanced_accuracy, ".4f"),
            fmt(delta, "+.4f"),
            fmt(r.agreement, ".1%") if not r.error else f"error: {r.error}",
        )
    con.print(t)
    con.print(f"validation data: {report.data_source}")
    con.print(f"int8 I/O: {'float32 in/out, int8 inside' if report.int8_io == 'float' else 'int8 in/out'}")
    for n in report.notes:
        con.print(n)
    for r in report.rows:
        if r.details and "steps" in r.details:
            con.print("\n".join(int8_lines(r.format, r.details)), markup=False, highlight=False)
    if report.logged_to:
        con.print(f"logged to {report.logged_to}")
    return EXIT_OK


def _formats(text: str | None) -> tuple[str, ...]:
    if not text:
        return FORMATS
    chosen = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise ConfigError(f"--formats: unknown {', '.join(unknown)} (choose from {', '.join(FORMATS)})")
    return tuple(chosen)
