"""`dermsweep predict`: top-k diagnoses for image files, from a registered model or an exported .tflite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..quiet import import_tensorflow
from ..shipping.defaults import DEFAULT_MODEL_URI
from .console import EXIT_OK, EXIT_PARTIAL, client, console, literal, literal_lines, print_json


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser("predict", help="top-k diagnoses for image files")
    common(p, experiment=False)
    p.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG files of skin lesions")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", help=f"model reference (default {DEFAULT_MODEL_URI})")
    g.add_argument("--tflite", help="an exported .tflite file")
    p.add_argument("--top-k", type=int, default=3, metavar="K", help="show the K likeliest classes (default 3)")
    p.add_argument("--json", action="store_true", help="print the predictions as JSON")
    p.set_defaults(fn=run)


def verdict(flag: dict) -> str:
    """One image's line: P(class) against the threshold, and the decision at the operating point."""
    sign = ">=" if flag["flagged"] else "<"
    word = "FLAGGED" if flag["flagged"] else "not flagged"
    return f"{word}: P={flag['probability']:.1%} {sign} {flag['threshold']:.1%}\ndecision: {flag['decision']}"


def operating_point_line(point: dict) -> str:
    """What the threshold means, from the validation split it was chosen on."""
    sens, spec = point.get("val_sensitivity"), point.get("val_specificity")
    measured = f": validation sensitivity {sens:.0%}, specificity {spec:.0%}" if sens is not None and spec else ""
    return (
        f"operating point: {point['class_name']} is flagged when its probability reaches {point['threshold']:.1%}"
        f" (chosen on validation for sensitivity {point.get('target_sensitivity', 0):.0%}{measured})"
    )


def run(args) -> int:
    from rich.table import Table

    import_tensorflow()
    from ..shipping.predict import Predictor

    if args.tflite:
        predictor = Predictor.from_tflite(args.tflite)
    else:
        uri = args.model or DEFAULT_MODEL_URI
        predictor = Predictor.from_uri(uri, None if uri.endswith(".keras") else client(args))
    results = predictor.predict_files(args.images, top_k=args.top_k)
    failed = [r for r in results if r.error]
    if args.json:
        print_json({"model": predictor.source, "predictions": [r.to_json() for r in results]})
    else:
        con, err = console(), console(stderr=True)
        # File names and model paths are shown literally: `lesion [bcc].jpg` is not rich markup, ESC is not sent raw
        t = Table(title=literal(f"predictions of {predictor.source}"), title_justify="left", show_lines=True)
        t.add_column("image")
        t.add_column(f"diagnosis (top {args.top_k})")
        t.add_column("probability", justify="right")
        point = predictor.operating_point
        if point:
            t.add_column(f"{point['class_name']} at its operating point")
        for r in results:
            if r.error:
                continue
            row = [
                literal(Path(r.path).name),
                literal_lines(f"{x['label']:5s}  {x['name']}" for x in r.top),
                "\n".join(f"{x['probability']:.1%}" for x in r.top),
            ]
            if point and r.operating_point:
                row.append(verdict(r.operating_point))
            t.add_row(*row)
        if len(failed) < len(results):
            con.print(t)
            if point:
                con.print(operating_point_line(point))
        for r in failed:
            err.print(literal(f"error: {r.error}"))
    return EXIT_PARTIAL if failed else EXIT_OK
