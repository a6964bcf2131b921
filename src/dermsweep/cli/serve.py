"""`dermsweep serve` (REST: `mlflow models serve` for @champion) and `dermsweep web` (the browser app)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from ..quiet import import_tensorflow
from ..shipping.model_ref import DEFAULT_MODEL_URI
from .console import client, console


def add_parsers(sub: Any, common: Any) -> None:
    p = sub.add_parser("serve", help="REST endpoint (mlflow models serve) for base64 images")
    common(p, experiment=False)
    p.add_argument("--model", help=f"registered model URI (default {DEFAULT_MODEL_URI})")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=5001, help="port to listen on (default 5001)")
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
    from ..shipping.model_ref import resolve

    uri = args.model or DEFAULT_MODEL_URI
    tracking = client(args)
    resolve(uri, tracking)  # fail fast with a clear message if the model is missing
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "models",
        "serve",
        "-m",
        uri,
        "--env-manager",
        "local",
        "--host",
        args.host,
        "--port",
        str(args.port),
    ]
    console(stderr=True).print(
        f"serving {uri} on http://{args.host}:{args.port}/invocations "
        '(POST {"dataframe_records": [{"image": "<base64>"}]})'
    )
    # mlflow execs `uvicorn` from PATH: put this environment's bin first (works without an activated venv)
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, MLFLOW_TRACKING_URI=str(tracking.tracking_uri), PATH=path)
    return subprocess.call(cmd, env=env)


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
