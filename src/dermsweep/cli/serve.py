"""`dermsweep serve` (REST: MLflow's scoring app for @champion behind a guard) and `dermsweep web` (browser app)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from ..quiet import import_tensorflow
from ..shipping.defaults import DEFAULT_MODEL_URI
from ..shipping.serve_guard import Limits
from .console import client, console


def add_parsers(sub: Any, common: Any) -> None:
    p = sub.add_parser("serve", help="REST endpoint (MLflow's scoring protocol) for base64 images")
    common(p, experiment=False)
    p.add_argument("--model", help=f"registered model URI (default {DEFAULT_MODEL_URI})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5001, help="port to listen on (default 5001)")
    p.add_argument(
        "--allow-host",
        action="append",
        metavar="NAME",
        help="also answer requests addressed to this host name (a DNS name or proxy in front); repeatable",
    )
    p.add_argument(
        "--max-body-mb", type=float, default=Limits().max_body / 1024 / 1024, help="largest request body (MiB)"
    )
    p.set_defaults(fn=serve)

    p = sub.add_parser("web", help="local web page: classify a lesion photo in the browser (ONNX, onnxruntime-web)")
    common(p, experiment=False)
    p.add_argument("--model", help=f"model reference (default {DEFAULT_MODEL_URI})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port to listen on (default 8765)")
    p.add_argument(
        "--no-install",
        action="store_true",
        help="do not run `npm install` for onnxruntime-web if missing (the page then uses the server)",
    )
    p.set_defaults(fn=web)


def serve(args) -> int:
    import mlflow

    from ..shipping.rest_server import serve as serve_rest
    from ..tracking.model_ref import resolve

    if not args.max_body_mb > 0:
        raise ConfigError(f"--max-body-mb={args.max_body_mb}: must be a positive number of megabytes")
    limits = Limits(max_body=int(args.max_body_mb * 1024 * 1024))
    uri = args.model or DEFAULT_MODEL_URI
    tracking = client(args)
    resolve(uri, tracking)  # fail fast with a clear message if the model is missing
    import_tensorflow()  # quietly, before the model loads it
    mlflow.set_tracking_uri(str(tracking.tracking_uri))
    mlflow.set_registry_uri(str(tracking.tracking_uri))
    console(stderr=True).print(
        f"serving {uri} on http://{args.host}:{args.port}/invocations "
        '(POST {"dataframe_records": [{"image": "<base64>"}]})',
        markup=False,
    )
    return serve_rest(uri, args.host, args.port, allow_hosts=args.allow_host or [], limits=limits)


def web(args) -> int:
    import_tensorflow()
    from ..web.server import serve as serve_web

    uri = args.model or DEFAULT_MODEL_URI
    return serve_web(
        uri,
        None if uri.endswith(".keras") else client(args),
        host=args.host,
        port=args.port,
        install=not args.no_install,
    )
