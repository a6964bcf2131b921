"""`dermsweep promote`: register the best finished run and point @champion at it, through the gate."""

from __future__ import annotations

from typing import Any

from ..quiet import import_tensorflow, redirected
from ..shipping.defaults import CONFIDENCE, MAX_PARAMS
from ..tracking import run_format as rf
from .comparison_options import add_seed_noise
from .console import EXIT_OK, EXIT_REFUSED, client, console, print_json


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser("promote", help="register the best finished run and point @champion at it (gated)")
    common(p)
    p.add_argument("--sweep", help="only consider this sweep (parent run id or study name)")
    p.add_argument("--name", default=rf.REGISTERED_MODEL, help=f"registered model name (default {rf.REGISTERED_MODEL})")
    p.add_argument("--metric", help="validation metric to rank and gate by (default: the objective)")
    p.add_argument("--force", action="store_true", help="promote even if not better or not comparable")
    p.add_argument("--dry-run", action="store_true", help="show the comparison, change nothing")
    p.add_argument(
        "--max-params",
        type=int,
        default=MAX_PARAMS,
        help=f"only runs with at most this many parameters can become champion (default {MAX_PARAMS:,})",
    )
    p.add_argument(
        "--confidence",
        type=float,
        default=CONFIDENCE,
        help="promote only when a paired bootstrap on the shared validation images finds the candidate better with "
        f"at least this probability (default {CONFIDENCE})",
    )
    add_seed_noise(p)
    p.add_argument("--json", action="store_true", help="print the decision as JSON")
    p.set_defaults(fn=run)


def explain(p, con) -> None:
    c, ch = p.candidate, p.champion
    con.print(
        f"candidate: run {c.run_id} ({c.name}) {p.metric} = {c.value:.4f} on split {c.split_id}"
        + (f", sweep {c.sweep}" if c.sweep else "")
    )
    if ch is None:
        con.print(f"champion:  none yet for {p.model_name}")
    else:
        v = "n/a" if ch.value is None else f"{ch.value:.4f}"
        con.print(f"champion:  {p.model_name} v{ch.version} (run {ch.run_id}) {p.metric} = {v} on split {ch.split_id}")
    if p.comparison is not None:
        d = p.comparison
        con.print(
            f"paired:    candidate - champion {d['describe']} on {d['n_images']} shared validation images "
            f"({d['n_groups']} lesions); promotes at P >= {p.confidence:g}"
        )
        if d.get("seed_noise"):
            con.print(f"noise:     images resampled by lesion, and {d['seed_noise']['describe']}")


def run(args) -> int:
    import_tensorflow()  # first: the promotion module imports Keras, whose start-up lines this keeps off the terminal
    from ..shipping.promotion import PromotionRefused, promote

    con = console()
    try:
        with redirected(1, 2):  # stdout stays clean for --json: library chatter goes to stderr
            p = promote(
                client(args),
                args.experiment,
                args.name,
                args.sweep,
                args.metric,
                args.force,
                args.dry_run,
                max_params=args.max_params,
                confidence=args.confidence,
                seed_noise=args.seed_noise,
            )
    except PromotionRefused as exc:
        if args.json:
            print_json(dict(exc.promotion.to_json() if exc.promotion else {}, error=str(exc)))
        else:
            if exc.promotion:
                explain(exc.promotion, con)
            console(stderr=True).print(f"refused: {exc.promotion.reason if exc.promotion else exc}")
        return EXIT_REFUSED
    if args.json:
        print_json(p.to_json())
        return EXIT_REFUSED if p.decision == "refused" else EXIT_OK
    explain(p, con)
    if p.decision == "refused":  # only from --dry-run
        con.print(f"dry run: would refuse: {p.reason}; nothing changed")
        return EXIT_REFUSED
    if p.decision == "dry-run":
        con.print(f"dry run: would promote ({p.reason}); nothing changed")
    else:
        con.print(
            f"promoted: {p.model_name} v{p.version} is now @{rf.CHAMPION} ({p.reason})"
            + (f"; v{p.champion.version} is @{rf.PREVIOUS}" if p.champion else "")
        )
        con.print(
            f"serve it:  dermsweep serve   (mlflow models serve -m models:/{p.model_name}@{rf.CHAMPION} "
            "--env-manager local)"
        )
    for n in p.notes:
        con.print(n)
    return EXIT_OK
