"""`dermsweep`: look at runs, promote the best one, export it, predict with it, serve it, or run the demo.

    dermsweep runs [--sweep ID|STUDY] [--metric val_macro_f1] [--json]
    dermsweep promote [--sweep ...] [--name skin-lesion-classifier] [--dry-run] [--force] [--json]
    dermsweep export [--model models:/skin-lesion-classifier@champion] [--out DIR] [--data-dir DIR] [--json]
    dermsweep predict IMAGE... [--model URI | --tflite FILE] [--top-k 3] [--json]
    dermsweep serve [--model URI] [--port 5001]
    dermsweep web [--model URI] [--host 127.0.0.1] [--port 8765]
    dermsweep demo

Exit codes: 0 ok, 1 some images could not be predicted, 2 error (bad input, missing model, unreachable store),
3 promotion refused by the gate. Errors are one line on stderr, never a traceback.
This file only parses arguments and prints; the work is in registry, export, predict, serving and model_io.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_PARTIAL, EXIT_ERROR, EXIT_REFUSED = 0, 1, 2, 3


def _quiet() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("mlflow", "absl", "tensorflow", "alembic"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Not a terminal (pipes, CI logs): wide enough that tables are not squeezed into 80 columns.
    width = None if stream.isatty() else 220
    return Console(file=stream, highlight=False, width=width)


def _import_tf_quietly() -> None:
    """Import TensorFlow/Keras with the C++ start-up chatter (oneDNN, absl) kept off the terminal."""
    if "tensorflow" in sys.modules:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            import keras  # noqa: F401
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _client(args):
    from .model_io import connect

    return connect(args.tracking_uri)


class _StdoutToStderr:
    """Keep stdout clean for --json: chatter from TF/Keras/converters (Python or C level) goes to stderr."""

    def __enter__(self):
        import contextlib

        sys.stdout.flush()
        self._saved = os.dup(1)
        os.dup2(2, 1)
        self._ctx = contextlib.redirect_stdout(sys.stderr)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc):
        self._ctx.__exit__(*exc)
        sys.stdout.flush()
        os.dup2(self._saved, 1)
        os.close(self._saved)
        return False


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# ---------------------------------------------------------------- runs
def cmd_runs(args) -> int:
    from rich.table import Table

    from .registry import collect_runs

    table = collect_runs(_client(args), args.experiment, args.sweep, args.metric,
                         finished_only=not args.all)
    if args.json:
        data = table.to_json()
        data["runs"] = data["runs"][: args.limit]
        _print_json(data)
        return EXIT_OK
    con = _console()
    if not table.rows:
        con.print(f"no {'finished ' if not args.all else ''}runs in "
                  f"{'sweep ' + args.sweep if args.sweep else 'experiment ' + args.experiment}")
        return EXIT_OK
    arrow = "↑" if table.direction == "maximize" else "↓"
    scope = f"sweep {args.sweep}" if args.sweep else f"experiment {args.experiment}"
    t = Table(title=f"{scope}: best runs by {table.metric} {arrow}", title_justify="left")
    test_metric = "test_" + table.metric.removeprefix("final_").removeprefix("val_")
    for col in ("#", "run", "id", "status", table.metric, test_metric, "split", "model"):
        t.add_column(col, justify="right" if col in ("#", table.metric, test_metric) else "left")
    for key in table.differing:
        t.add_column(key)
    for i, r in enumerate(table.rows[: args.limit], 1):
        def num(k):
            v = r.metrics.get(k)
            return "-" if v is None else f"{v:.4f}"
        t.add_row(str(i), r.name, r.run_id[:8], r.status, num(table.metric), num(test_metric), r.split_id or "-",
                  "yes" if r.has_model else "no", *[_short(r.params.get(k, "-")) for k in table.differing])
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


# ---------------------------------------------------------------- promote
def _explain_promotion(p, con) -> None:
    c, ch = p.candidate, p.champion
    con.print(f"candidate: run {c.run_id} ({c.name}) {p.metric} = {c.value:.4f} on split {c.split_id}"
              + (f", sweep {c.sweep}" if c.sweep else ""))
    if ch is None:
        con.print(f"champion:  none yet for {p.model_name}")
    else:
        v = "n/a" if ch.value is None else f"{ch.value:.4f}"
        con.print(f"champion:  {p.model_name} v{ch.version} (run {ch.run_id}) {p.metric} = {v} on split {ch.split_id}")


def cmd_promote(args) -> int:
    from .registry import PromotionRefused, promote

    con = _console()
    _import_tf_quietly()
    try:
        with _StdoutToStderr():
            p = promote(_client(args), args.experiment, args.name, args.sweep, args.metric, args.force, args.dry_run)
    except PromotionRefused as exc:
        if args.json:
            _print_json(dict(exc.promotion.to_json() if exc.promotion else {}, error=str(exc)))
        else:
            if exc.promotion:
                _explain_promotion(exc.promotion, con)
            _console(stderr=True).print(f"refused: {exc.promotion.reason if exc.promotion else exc}")
        return EXIT_REFUSED
    if args.json:
        _print_json(p.to_json())
        return EXIT_REFUSED if p.decision == "refused" else EXIT_OK
    _explain_promotion(p, con)
    if p.decision == "refused":  # only from --dry-run
        con.print(f"dry run: would refuse: {p.reason}; nothing changed")
        return EXIT_REFUSED
    if p.decision == "dry-run":
        con.print(f"dry run: would promote ({p.reason}); nothing changed")
    else:
        con.print(f"promoted: {p.model_name} v{p.version} is now @champion ({p.reason})"
                  + (f"; v{p.champion.version} is @previous" if p.champion else ""))
        con.print(f"serve it:  dermsweep serve   (mlflow models serve -m models:/{p.model_name}@champion "
                  "--env-manager local)")
    for n in p.notes:
        con.print(n)
    return EXIT_OK


# ---------------------------------------------------------------- export
def cmd_export(args) -> int:
    from rich.table import Table

    from .export import export, fmt, human_size

    err = _console(stderr=True)
    con = _console()
    _import_tf_quietly()
    client = _client(args) if not args.model.endswith(".keras") else None
    out = args.out or str(Path("outputs") / "export" / time.strftime("%Y%m%d-%H%M%S"))
    with _StdoutToStderr():
        report = export(args.model, out, client, data_dir=args.data_dir, calibration_dir=args.calibration_dir,
                        calibration_count=args.calibration_count, runs=args.runs, int8_io=args.int8_io,
                        log_to_run=not args.no_log, formats=_formats(args.formats), progress=lambda m: err.print(f"[dim]{m}[/]"))
    if args.json:
        _print_json(report.to_json())
        return EXIT_OK
    t = Table(title=f"export of {args.model} -> {report.out_dir}", title_justify="left")
    for col in ("format", "file", "size", "latency ms (b=1)", "val bal. acc", "Δ vs keras", "agree w/ keras"):
        t.add_column(col, justify="left" if col in ("format", "file") else "right")
    keras = report.row("keras")
    for r in report.rows:
        delta = None if r.balanced_accuracy is None or keras is None or keras.balanced_accuracy is None \
            else r.balanced_accuracy - keras.balanced_accuracy
        t.add_row(r.format, r.path, human_size(r.size_bytes), fmt(r.latency_ms, ".2f"),
                  fmt(r.balanced_accuracy, ".4f"), fmt(delta, "+.4f"),
                  fmt(r.agreement, ".1%") if not r.error else f"error: {r.error}")
    con.print(t)
    con.print(f"validation data: {report.data_source}")
    con.print(f"int8 I/O: {'float32 in/out, int8 inside' if report.int8_io == 'float' else 'int8 in/out'}")
    for n in report.notes:
        con.print(n)
    if report.logged_to:
        con.print(f"logged to {report.logged_to}")
    return EXIT_OK


def _formats(text: str | None):
    from .errors import ConfigError
    from .export import FORMATS

    if not text:
        return FORMATS
    chosen = [f.strip() for f in text.split(",") if f.strip()]
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise ConfigError(f"--formats: unknown {', '.join(unknown)} (choose from {', '.join(FORMATS)})")
    return tuple(chosen)


# ---------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    from rich.table import Table

    _import_tf_quietly()
    from .predict import Predictor

    if args.tflite:
        predictor = Predictor.from_tflite(args.tflite)
    else:
        from .model_io import DEFAULT_MODEL_URI

        uri = args.model or DEFAULT_MODEL_URI
        client = None if uri.endswith(".keras") else _client(args)
        predictor = Predictor.from_uri(uri, client)
    results = predictor.predict_files(args.images, top_k=args.top_k)
    failed = [r for r in results if r.error]
    if args.json:
        _print_json({"model": predictor.source, "predictions": [r.to_json() for r in results]})
    else:
        con, err = _console(), _console(stderr=True)
        t = Table(title=f"predictions of {predictor.source}", title_justify="left", show_lines=True)
        t.add_column("image")
        t.add_column("diagnosis (top %d)" % args.top_k)
        t.add_column("probability", justify="right")
        for r in results:
            if r.error:
                continue
            t.add_row(Path(r.path).name, "\n".join(f"{x['label']:5s}  {x['name']}" for x in r.top),
                      "\n".join(f"{x['probability']:.1%}" for x in r.top))
        if len(failed) < len(results):
            con.print(t)
        for r in failed:
            err.print(f"error: {r.error}")
    return EXIT_PARTIAL if failed else EXIT_OK


# ---------------------------------------------------------------- serve
def cmd_serve(args) -> int:
    from .model_io import DEFAULT_MODEL_URI, resolve

    uri = args.model or DEFAULT_MODEL_URI
    resolve(uri, _client(args))  # fail fast with a clear message if the model is missing
    cmd = [str(Path(sys.executable).with_name("mlflow")), "models", "serve", "-m", uri, "--env-manager", "local",
           "--host", args.host, "--port", str(args.port)]
    _console(stderr=True).print(f"serving {uri} on http://{args.host}:{args.port}/invocations "
                                "(POST {\"dataframe_records\": [{\"image\": \"<base64>\"}]})")
    # mlflow execs `uvicorn` from PATH: put this environment's bin first (works without an activated venv)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, MLFLOW_TRACKING_URI=os.environ.get("MLFLOW_TRACKING_URI") or _tracking(args), PATH=path)
    return subprocess.call(cmd, env=env)


def _tracking(args) -> str:
    from .model_io import tracking_uri

    return tracking_uri(args.tracking_uri)


# ---------------------------------------------------------------- web
def cmd_web(args) -> int:
    from .model_io import DEFAULT_MODEL_URI

    _import_tf_quietly()
    from .web.server import serve

    uri = args.model or DEFAULT_MODEL_URI
    client = None if uri.endswith(".keras") else _client(args)
    return serve(uri, client, host=args.host, port=args.port, install=not args.no_install)


# ---------------------------------------------------------------- demo
def repo_root() -> Path:
    for base in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[2]):
        if (base / "train.py").is_file() and (base / "conf").is_dir():
            return base
    from .errors import ConfigError

    raise ConfigError("cannot find the dermsweep repository (train.py and conf/): run the demo from its folder")


def run_sweep(root: Path, sweep: str, extra: list[str]) -> int:
    return subprocess.call([sys.executable, "train.py", "-m", f"+sweep={sweep}", *extra], cwd=root)


def latest_sweep(client, since_ms: int):
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        filter_string=f"tags.`dermsweep.role` = 'sweep' and attributes.start_time >= {since_ms}",
        order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0] if runs else None


def cmd_demo(args) -> int:
    from .errors import DermsweepError
    from .registry import PromotionRefused, promote

    con = _console()
    root = repo_root()
    os.chdir(root)  # the default store (mlruns/) and the sweep's relative paths live here
    if not (root / "sweeps" / f"{args.sweep}.yaml").is_file():
        raise DermsweepError(f"no sweep definition sweeps/{args.sweep}.yaml in {root}")
    overrides = list(args.overrides)
    if not any(o.startswith("hydra.sweeper.study_name=") for o in overrides):
        # A fresh study each time: the same study name would resume the finished one and run nothing.
        overrides.append(f"hydra.sweeper.study_name=dermsweep-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    con.rule(f"1/3  sweep: python train.py -m +sweep={args.sweep} {' '.join(overrides)}")
    started = int(time.time() * 1000) - 1000
    rc = run_sweep(root, args.sweep, overrides)
    if rc != 0:
        raise DermsweepError(f"the sweep failed (exit code {rc}); see its output above")
    client = _client(args)
    parent = latest_sweep(client, started)
    experiment = client.get_experiment(parent.info.experiment_id).name if parent else args.experiment
    con.rule("2/3  promote the best trial")
    try:
        p = promote(client, experiment, args.name, parent.info.run_id if parent else None)
        _explain_promotion(p, con)
        con.print(f"promoted: {p.model_name} v{p.version} is now @champion")
    except PromotionRefused as exc:
        if exc.promotion:
            _explain_promotion(exc.promotion, con)
        con.print(f"kept the current champion: {exc.promotion.reason if exc.promotion else exc}")
    con.rule("3/3  where to look next")
    sweep_arg = f" --sweep {parent.info.run_id}" if parent else ""
    img = root.parent / "shared" / "data" / "ham10000" / "HAM10000_images_part_1" / "ISIC_0024306.jpg"
    con.print(f"  make ui                  -> http://127.0.0.1:5000  (experiment {experiment!r}, Models tab)\n"
              f"  dermsweep runs{sweep_arg}\n"
              f"  dermsweep predict {img if img.is_file() else 'IMAGE.jpg'}\n"
              f"  dermsweep export         -> SavedModel, TFLite f32/f16/int8, ONNX + size/latency/accuracy table\n"
              f"  dermsweep serve          -> REST endpoint for base64 images")
    return EXIT_OK


# ---------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    from .model_io import DEFAULT_MODEL_NAME, DEFAULT_MODEL_URI

    ap = argparse.ArgumentParser(prog="dermsweep", description="Find, track and ship the best skin-lesion classifier.")
    ap.add_argument("--tracking-uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else "
                                           "sqlite:///mlruns/mlflow.db)")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(p, experiment=True):
        p.add_argument("--tracking-uri", default=argparse.SUPPRESS, help="as above")
        if experiment:
            p.add_argument("--experiment", default="dermsweep", help="MLflow experiment (default dermsweep)")

    p = sub.add_parser("runs", help="table of the best runs of an experiment or sweep")
    common(p)
    p.add_argument("--sweep", help="a sweep's parent run id or study name")
    p.add_argument("--metric", help="rank by this metric (default: the runs' objective, e.g. val_balanced_accuracy)")
    p.add_argument("--limit", type=int, default=15)
    p.add_argument("--all", action="store_true", help="include pruned and failed runs")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_runs)

    p = sub.add_parser("promote", help="register the best finished run and point @champion at it (gated)")
    common(p)
    p.add_argument("--sweep", help="only consider this sweep (parent run id or study name)")
    p.add_argument("--name", default=DEFAULT_MODEL_NAME, help=f"registered model name (default {DEFAULT_MODEL_NAME})")
    p.add_argument("--metric", help="validation metric to rank and gate by (default: the objective)")
    p.add_argument("--force", action="store_true", help="promote even if not better or not comparable")
    p.add_argument("--dry-run", action="store_true", help="show the comparison, change nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_promote)

    p = sub.add_parser("export", help="SavedModel, TFLite f32/f16/int8 and ONNX, with size/latency/accuracy")
    common(p, experiment=False)
    p.add_argument("--model", default=DEFAULT_MODEL_URI, help=f"model reference (default {DEFAULT_MODEL_URI})")
    p.add_argument("--out", help="output folder (default outputs/export/<time>)")
    p.add_argument("--data-dir", help="labelled images (one sub-folder per class) to evaluate and calibrate on, "
                                      "instead of the run's own validation/training split")
    p.add_argument("--calibration-dir", help="images to calibrate int8 on (default: the run's training split)")
    p.add_argument("--calibration-count", type=int, default=150)
    p.add_argument("--runs", type=int, default=50, help="timed batch-1 calls per format (median reported)")
    p.add_argument("--int8-io", choices=["float", "int8"], default="float",
                   help="int8 model's input/output type (default float: int8 inside, float32 at the edges)")
    p.add_argument("--formats", help="comma-separated subset of: keras (always), savedmodel, tflite_f32, tflite_f16, "
                                     "tflite_int8, onnx (default: all)")
    p.add_argument("--no-log", action="store_true", help="do not log the export to the source run")
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_export)

    p = sub.add_parser("predict", help="top-k diagnoses for image files")
    common(p, experiment=False)
    p.add_argument("images", nargs="+", metavar="IMAGE")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", help=f"model reference (default {DEFAULT_MODEL_URI})")
    g.add_argument("--tflite", help="an exported .tflite file")
    p.add_argument("--top-k", type=int, default=3)
    p.add_argument("--json", action="store_true")
    p.set_defaults(fn=cmd_predict)

    p = sub.add_parser("serve", help="REST endpoint (mlflow models serve) for base64 images")
    common(p, experiment=False)
    p.add_argument("--model", help=f"registered model URI (default {DEFAULT_MODEL_URI})")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5001)
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser("web", help="local web page: classify a lesion photo in the browser (ONNX, onnxruntime-web)")
    common(p, experiment=False)
    p.add_argument("--model", help=f"model reference (default {DEFAULT_MODEL_URI})")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--no-install", action="store_true",
                   help="do not run `npm install` for onnxruntime-web if missing (the page then uses the server)")
    p.set_defaults(fn=cmd_web)

    p = sub.add_parser("demo", help="small sweep on synthetic data, promote the winner, show where to look")
    common(p)
    p.add_argument("--sweep", default="demo", help="sweep definition in sweeps/ (default demo)")
    p.add_argument("--name", default=DEFAULT_MODEL_NAME)
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for the sweep")
    p.set_defaults(fn=cmd_demo)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet()
    from .errors import DermsweepError

    try:
        return args.fn(args)
    except DermsweepError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - MLflow/TF errors still get one readable line
        from mlflow.exceptions import MlflowException

        if isinstance(exc, MlflowException | OSError | ValueError):
            msg = (str(getattr(exc, "message", "") or exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            print(f"error: {msg}", file=sys.stderr)
            return EXIT_ERROR
        raise


if __name__ == "__main__":
    sys.exit(main())
