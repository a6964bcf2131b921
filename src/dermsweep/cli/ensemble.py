"""`dermsweep ensemble`: one model averaging the best runs' classifiers, chosen on validation, logged as a run."""

from __future__ import annotations

from typing import Any

from ..quiet import import_tensorflow, redirected
from ..shipping.defaults import MAX_PARAMS
from .console import EXIT_OK, client, console, print_json


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser("ensemble", help="build an ensemble of the best runs (greedy or top-k on validation), log it")
    common(p)
    p.add_argument("--sweep", help="choose members from this sweep only (parent run id or study name)")
    p.add_argument("--size", type=int, default=5, help="most members, counting repeats (default 5)")
    p.add_argument(
        "--method",
        choices=["greedy", "top"],
        default="greedy",
        help="greedy forward selection with replacement (Caruana et al. 2004), or the plain top-k",
    )
    p.add_argument("--candidates", type=int, default=10, help="how many of the best runs to choose from")
    p.add_argument(
        "--runs",
        nargs="+",
        metavar="RUN_ID",
        help="choose among these runs only (ids or unique prefixes, e.g. three seeds' cross-validations)",
    )
    p.add_argument("--metric", help="validation metric to choose by (default: the runs' objective)")
    p.add_argument("--promote", action="store_true", help="then promote the experiment's best run through the gate")
    p.add_argument("--max-params", type=int, default=MAX_PARAMS, help="the gate's parameter limit for --promote")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(fn=run)


def run(args) -> int:
    import_tensorflow()  # first: the ensemble module imports Keras, whose start-up lines this keeps off the terminal
    from ..shipping.ensemble import build
    from ..shipping.promotion import PromotionRefused, promote

    err, con = console(stderr=True), console()
    tracking = client(args)
    with redirected(1, 2):
        ensemble = build(
            tracking,
            args.experiment,
            args.sweep,
            args.size,
            args.method,
            args.candidates,
            args.metric,
            say=lambda m: err.print(f"[dim]{m}[/]"),
            runs=args.runs,
        )
    report: dict[str, Any] = {
        "run_id": ensemble.run_id,
        "members": ensemble.member_ids(),
        "trace": ensemble.trace,
        "val": ensemble.values.get("val"),
        "test": ensemble.values.get("test"),
        "best_single_val": ensemble.best_single,
        "params": ensemble.params,
        "latency_ms": ensemble.latency_ms,
    }
    if args.promote:
        try:
            with redirected(1, 2):
                p = promote(tracking, args.experiment, max_params=args.max_params)
            report["promotion"] = p.to_json()
        except PromotionRefused as exc:
            report["promotion"] = dict(exc.promotion.to_json() if exc.promotion else {}, error=str(exc))
    if args.json:
        print_json(report)
        return EXIT_OK
    names = ", ".join(m.row.name for m in ensemble.members)
    con.print(f"ensemble run {ensemble.run_id}: {len(ensemble.members)} members ({names})")
    con.print(
        f"  validation objective {ensemble.values['val']:.4f} (best single run {ensemble.best_single:.4f}); "
        f"test {ensemble.values['test']:.4f} (reported only)"
    )
    con.print(f"  {ensemble.params:,} parameters, {ensemble.latency_ms:.1f} ms per image (batch 1, this machine)")
    if "promotion" in report:
        promo = report["promotion"]
        con.print(f"promotion: {promo.get('decision')} ({promo.get('reason') or promo.get('error')})")
    return EXIT_OK
