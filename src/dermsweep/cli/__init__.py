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
    dermsweep completion bash|zsh
    dermsweep --version          (also: python -m dermsweep ...)

Exit codes: 0 ok, 1 some images could not be predicted, 2 error (bad input, missing model, unreachable store),
3 promotion refused by the gate. Errors are one line on stderr, never a traceback.
One module per command parses its arguments and prints; the work is in the shipping package.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .console import EXIT_ERROR, EXIT_OK, printable, quiet_libraries

# name -> (module in this package, one line for `dermsweep --help`). Only the command that runs is imported (its
# module may pull in MLflow, TensorFlow, scikit-learn): `dermsweep --help` and `--version` import none of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "runs": ("runs", "table of the best runs of an experiment or sweep (--reap: mark runs of dead processes)"),
    "promote": ("promote", "register the best run and point @champion at it, if it beats the current one"),
    "ensemble": ("ensemble", "combine the best runs into one model (greedy or top-k), optionally promote it"),
    "export": ("export", "export a model to SavedModel, TFLite (f32, f16, int8) and ONNX, with a comparison table"),
    "evaluate": ("evaluate", "score a shipped model on a labelled image folder, logged as an MLflow run"),
    "predict": ("predict", "classify lesion images with @champion (or a TFLite file)"),
    "serve": ("serve", "REST endpoint (mlflow models serve) for base64 images"),
    "web": ("serve", "local web page: classify a lesion photo in the browser (ONNX, onnxruntime-web)"),
    "demo": ("demo", "small sweep on synthetic data, promote the winner, show where to look"),
    "completion": ("completion", 'print a shell completion script: eval "$(dermsweep completion bash)"'),
}


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("dermsweep")
    except PackageNotFoundError:  # running from a source tree without an install
        from .. import __version__

        return __version__


def _common(p: argparse.ArgumentParser, experiment: bool = True) -> None:
    p.add_argument("--tracking-uri", default=argparse.SUPPRESS, help="MLflow tracking URI (as for dermsweep itself)")
    if experiment:
        p.add_argument("--experiment", default="dermsweep", help="MLflow experiment (default dermsweep)")


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line (only=None), or every command's name and summary with only command `only`'s options
    (only="": none; what `dermsweep --help` needs)."""
    ap = argparse.ArgumentParser(
        prog="dermsweep",
        description="Find, track and ship the best skin-lesion classifier. `dermsweep COMMAND --help` for a "
        "command's options.",
        epilog="Exit codes: 0 ok, 1 some images could not be predicted, 2 error, 3 promotion refused by the gate.",
    )
    ap.add_argument("--version", action="version", version=f"dermsweep {version()}")
    ap.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="also show the libraries' own warnings and log lines (TensorFlow, MLflow), hidden by default",
    )
    ap.add_argument(
        "--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db)"
    )
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    added: set[str] = set()
    for name, (module_name, summary) in COMMANDS.items():
        if name in added:
            continue
        if only is None or only == name or (only in COMMANDS and COMMANDS[only][0] == module_name):
            module = importlib.import_module(f".{module_name}", __name__)
            before = set(sub.choices)
            adder = getattr(module, "add_parsers", None) or module.add_parser
            adder(sub, _common)
            for new in set(sub.choices) - before:  # `dermsweep NAME --help` opens with the command's summary
                sub.choices[new].description = sub.choices[new].description or COMMANDS[new][1]
            added |= set(sub.choices) - before
        else:
            sub.add_parser(name, help=summary, description=summary)
            added.add(name)
    return ap


def command_of(argv: list[str]) -> str | None:
    """The subcommand named in `argv` (the first word that is not an option or --tracking-uri's value)."""
    words = iter(argv)
    for word in words:
        if word == "--tracking-uri":
            next(words, None)
        elif not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(only=command_of(argv) or "").parse_args(argv)
    quiet_libraries(verbose=bool(getattr(args, "verbose", False)))
    from ..errors import DermsweepError

    try:
        return int(args.fn(args))
    except BrokenPipeError:
        return _closed_pipe()
    except DermsweepError as exc:
        return _error(str(exc))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException | OSError | ValueError):
            msg = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            return _error(msg)
        raise


def _error(message: str) -> int:
    """One line on stderr, every control character made visible (a message may quote a file's raw bytes)."""
    print(f"error: {printable(message)}", file=sys.stderr)
    return EXIT_ERROR


def _closed_pipe() -> int:
    """The reader went away (`dermsweep runs --json | head -1`): stop quietly. Python would otherwise report the
    failed flush of stdout at exit, so stdout is pointed at /dev/null first (Python's documented recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
