"""`dermsweep`: look at runs, promote the best one, export it, predict with it, serve it, or run the demo.

    dermsweep runs [--sweep ID|STUDY] [--metric val_macro_f1] [--json] [--reap [--stale-after SECONDS]]
    dermsweep promote [--sweep ...] [--name skin-lesion-classifier] [--dry-run] [--force] [--json]
    dermsweep ensemble [--sweep ...] [--size 5] [--method greedy|top] [--promote] [--json]
    dermsweep export [--model models:/skin-lesion-classifier@champion] [--out DIR] [--data-dir DIR] [--json]
    dermsweep evaluate DATA [--model URI] [--experiment dermsweep-evaluations] [--no-log] [--max-images N] [--json]
    dermsweep predict IMAGE... [--model URI | --tflite FILE] [--top-k 3] [--json]
    dermsweep serve [--model URI] [--port 5001]
    dermsweep web [--model URI] [--host 127.0.0.1] [--port 8765]
    dermsweep demo

Exit codes: 0 ok, 1 some images could not be predicted, 2 error (bad input, missing model, unreachable store),
3 promotion refused by the gate. Errors are one line on stderr, never a traceback.
One module per command parses its arguments and prints; the work is in the shipping package.
"""

from __future__ import annotations

import argparse
import sys

from . import demo, ensemble, evaluate, export, predict, promote, runs, serve
from .console import EXIT_ERROR, quiet_libraries


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="dermsweep", description="Find, track and ship the best skin-lesion classifier.")
    ap.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)"
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p, experiment=True):
        p.add_argument("--tracking-uri", default=argparse.SUPPRESS, help="as above")
        if experiment:
            p.add_argument("--experiment", default="dermsweep", help="MLflow experiment (default dermsweep)")

    for command in (runs, promote, ensemble, export, evaluate, predict, demo):
        command.add_parser(sub, common)
    serve.add_parsers(sub, common)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet_libraries()
    from ..errors import DermsweepError

    try:
        return int(args.fn(args))
    except DermsweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException | OSError | ValueError):
            msg = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            print(f"error: {msg}", file=sys.stderr)
            return EXIT_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())
