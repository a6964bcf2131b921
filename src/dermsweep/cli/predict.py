"""`dermsweep predict`: top-k diagnoses for image files, from a registered model or an exported .tflite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..quiet import import_tensorflow
from ..shipping.model_ref import DEFAULT_MODEL_URI
from .console import EXIT_OK, EXIT_PARTIAL, client, console, literal, literal_lines, print_json


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser("predict", help="top-k diagnoses for image files")
    common(p, experiment=False)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", help=f"model reference (default {DEFAULT_MODEL_URI})")
    g.add_argument("--tflite", help="an exported .tflite file")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=run)


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
        for r in results:
            if r.error:
                continue
            t.add_row(
                literal(Path(r.path).name),
                literal_lines(f"{x['label']:5s}  {x['name']}" for x in r.top),
                "\n".join(f"{x['probability']:.1%}" for x in r.top),
            )
        if len(failed) < len(results):
            con.print(t)
        for r in failed:
            err.print(literal(f"error: {r.error}"))
    return EXIT_PARTIAL if failed else EXIT_OK
