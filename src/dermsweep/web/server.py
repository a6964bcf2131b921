"""`dermsweep web`: a local page that classifies a lesion photo with the promoted model, in the browser.

    GET  /                 the page (static/index.html, app.js, style.css)
    GET  /vendor/<file>    onnxruntime-web's dist/ files, from node_modules/ beside this file (npm, served locally)
    GET  /model.onnx       the model for the browser: ONNX with the training resize baked in (browser_model.py)
    GET  /api/info         model version, metrics, promotion date, class names, input size
    POST /api/predict      body = the image file's bytes -> probabilities (server-side fallback, predict.py)
    POST /api/gradcam      body = the image file's bytes -> Grad-CAM overlay PNG (data URL) and heat-map grid

Standard library only (ThreadingHTTPServer); the model is called under a lock (one TensorFlow call at a time).
"""

from __future__ import annotations

import json
import mimetypes
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import numpy as np

from ..data.images import BadImage, load_rgb
from ..errors import DermsweepError
from ..shipping.diagnoses import answer
from ..shipping.model_ref import load
from ..shipping.predict import Predictor
from ..tracking import run_format as rf
from ..tracking.store import first_line

if TYPE_CHECKING:
    from .gradcam import GradCAM

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
ORT_VERSION = "1.30.0"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
MAX_UPLOAD = 25 * 1024 * 1024
TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".wasm": "application/wasm",
    ".css": "text/css",
    ".html": "text/html; charset=utf-8",
    ".onnx": "application/octet-stream",
    ".json": "application/json",
    ".map": "application/json",
    ".png": "image/png",
}


class WebError(DermsweepError):
    """The web app cannot start as asked."""


# ---------------------------------------------------------------- browser runtime (npm)
def vendor_dir() -> Path:
    """Folder holding node_modules/onnxruntime-web (default: beside this file; $DERMSWEEP_WEB_VENDOR overrides)."""
    return Path(os.environ.get("DERMSWEEP_WEB_VENDOR") or HERE)


def ort_dist(base: Path | None = None) -> Path:
    return (base or vendor_dir()) / "node_modules" / "onnxruntime-web" / "dist"


def ensure_runtime(install: bool = True, say=print) -> Path | None:
    """onnxruntime-web's dist/ folder, running `npm install` once if it is missing. None if unavailable."""
    base = vendor_dir()
    dist = ort_dist(base)
    if all((dist / f).is_file() for f in ORT_FILES):
        return dist
    if not install:
        return None
    npm = shutil.which("npm")
    if npm is None:
        say("npm not found: the page will classify on the server (install Node.js/npm for in-browser inference)")
        return None
    base.mkdir(parents=True, exist_ok=True)
    if not (base / "package.json").is_file():
        (base / "package.json").write_text(
            json.dumps(
                {"name": "dermsweep-web-vendor", "private": True, "dependencies": {"onnxruntime-web": ORT_VERSION}},
                indent=2,
            )
        )
    say(f"installing onnxruntime-web {ORT_VERSION} into {base}/node_modules (npm, once)")
    try:
        r = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund"], cwd=base, capture_output=True, text=True, timeout=600
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        say(f"npm install failed ({exc}): the page will classify on the server")
        return None
    if r.returncode != 0 or not all((dist / f).is_file() for f in ORT_FILES):
        tail = (r.stderr or r.stdout).strip().splitlines()[-1:] or ["no output"]
        say(f"npm install failed ({tail[0][:200]}): the page will classify on the server")
        return None
    return dist


# ---------------------------------------------------------------- the model, server side
class WebModel:
    """The Keras model, its metadata, the browser's ONNX file and Grad-CAM."""

    def __init__(self, uri: str, client=None, workdir: str | Path | None = None, build_onnx: bool = True, say=print):
        self.uri = uri
        self.model, self.ref = load(uri, client)
        self.lock = threading.Lock()
        meta = self.ref.meta
        self.class_names = list(meta["class_names"])
        self.height, self.width = int(meta["input_height"]), int(meta["input_width"])
        self.predictor = Predictor(
            lambda x: np.asarray(self.model.predict_on_batch(x.astype(np.float32))), meta, self.ref.describe()
        )
        self.info = describe(self.ref, client)
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="dermsweep-web-"))
        self.onnx_path: Path | None = None
        self.onnx_error: str | None = None
        self.onnx_output: str | None = None
        self._gradcam: GradCAM | None = None
        if build_onnx:
            self.build_onnx(say)

    def build_onnx(self, say=print) -> None:
        from .browser_model import build_browser_onnx

        path = self.workdir / "model.onnx"
        try:
            with self.lock:
                names = build_browser_onnx(self.model, self.height, self.width, path)
            self.onnx_path, self.onnx_output = path, names["output"]
            say(
                f"browser model: {path} ({path.stat().st_size / 1e6:.1f} MB, ONNX opset {names['opset']}, "
                "PIL bilinear resize inside)"
            )
        except Exception as exc:
            self.onnx_error = f"ONNX export failed: {first_line(exc)}"
            say(f"{self.onnx_error}; the page will classify on the server")

    def pixels(self, data: bytes) -> np.ndarray:
        """The training preprocessing (load_rgb). Raises BadImage."""
        return load_rgb(data, self.height, self.width)

    def predict(self, data: bytes) -> dict:
        x = self.pixels(data)
        with self.lock:
            p = self.predictor.predict_arrays(x[None])[0]
        return answer(p, self.class_names, self.predictor.full_names)

    def gradcam(self, data: bytes) -> dict:
        from .gradcam import GradCAM, data_url, overlay_png

        x = self.pixels(data)
        t = time.perf_counter()
        with self.lock:
            if self._gradcam is None:
                self._gradcam = GradCAM(self.model)
            cam, probs = self._gradcam(x[None].astype(np.float32))
        out = answer(probs, self.class_names, self.predictor.full_names)
        out.update(
            layer=self._gradcam.layer,
            heatmap=np.round(cam, 4).tolist(),
            overlay=data_url(overlay_png(x, cam)),
            ms=round((time.perf_counter() - t) * 1000, 1),
        )
        return out

    def info_json(self) -> dict:
        return dict(
            self.info,
            input_height=self.height,
            input_width=self.width,
            class_names=self.class_names,
            full_names=self.predictor.full_names,
            onnx={"url": "model.onnx", "input": "pixels", "output": self.onnx_output, "error": self.onnx_error}
            if self.onnx_path or self.onnx_error
            else None,
        )


def describe(ref, client) -> dict:
    """Version, source run, validation/test balanced accuracy and promotion date, for the page."""
    info = {
        "uri": ref.uri,
        "model_name": ref.model_name,
        "version": ref.version,
        "run_id": ref.run_id,
        "description": ref.describe(),
        "val_balanced_accuracy": None,
        "test_balanced_accuracy": None,
        "promoted_at": None,
        "aliases": [],
    }
    if client is None:
        return info
    try:
        if ref.model_name and ref.version:
            mv = client.get_model_version(ref.model_name, ref.version)
            tags = dict(mv.tags or {})
            info["aliases"] = list(getattr(mv, "aliases", []) or [])
            info["promoted_at"] = tags.get(rf.PROMOTED_AT) or time.strftime(
                "%Y-%m-%dT%H:%M:%SZ", time.gmtime((mv.creation_timestamp or 0) / 1000)
            )
            versions = {
                k.removeprefix(rf.VERSION_METRIC): float(v) for k, v in tags.items() if k.startswith(rf.VERSION_METRIC)
            }
            info["val_balanced_accuracy"] = rf.read(versions, "final_val/balanced_accuracy")
            info["test_balanced_accuracy"] = rf.read(versions, "test/balanced_accuracy")
        if ref.run_id and (info["val_balanced_accuracy"] is None or info["test_balanced_accuracy"] is None):
            metrics = client.get_run(ref.run_id).data.metrics
            info["val_balanced_accuracy"] = info["val_balanced_accuracy"] or rf.read(
                metrics, "final_val/balanced_accuracy"
            )
            info["test_balanced_accuracy"] = info["test_balanced_accuracy"] or rf.read(
                metrics, "test/balanced_accuracy"
            )
    except Exception as exc:
        info["info_error"] = first_line(exc)
    return info


# ---------------------------------------------------------------- HTTP
class Handler(BaseHTTPRequestHandler):
    server_version = "dermsweep-web"
    app: WebModel
    dist: Path | None
    quiet = False

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} {fmt % args}\n")

    def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _file(self, path: Path, cache: bool = False) -> None:
        if not path.is_file():
            return self._error(HTTPStatus.NOT_FOUND, f"not found: {self.path}")
        ctype = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(200, path.read_bytes(), ctype, cache)

    @staticmethod
    def _inside(root: Path, rel: str) -> Path | None:
        target = (root / rel).resolve()
        return target if target.is_relative_to(root.resolve()) else None

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        path = urlparse(self.path).path
        if path in ("/", "/index.html"):
            return self._file(STATIC / "index.html")
        if path == "/api/info":
            return self._json(dict(self.app.info_json(), runtime=bool(self.dist)))
        if path == "/model.onnx":
            if self.app.onnx_path is None:
                return self._error(HTTPStatus.NOT_FOUND, self.app.onnx_error or "no browser model")
            return self._file(self.app.onnx_path)
        if path.startswith("/static/"):
            target = self._inside(STATIC, path[len("/static/") :])
            return self._file(target) if target else self._error(HTTPStatus.NOT_FOUND, "not found")
        if path.startswith("/vendor/"):
            if self.dist is None:
                return self._error(HTTPStatus.NOT_FOUND, "onnxruntime-web is not installed (npm)")
            target = self._inside(self.dist, path[len("/vendor/") :])
            return self._file(target, cache=True) if target else self._error(HTTPStatus.NOT_FOUND, "not found")
        if path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        return self._error(HTTPStatus.NOT_FOUND, f"not found: {path}")

    def do_POST(self):
        path = urlparse(self.path).path
        if path not in ("/api/predict", "/api/gradcam"):
            return self._error(HTTPStatus.NOT_FOUND, f"not found: {path}")
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._error(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if length > MAX_UPLOAD:
            return self._error(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"file too large ({length / 1e6:.1f} MB; limit {MAX_UPLOAD / 1e6:.0f} MB)",
            )
        data = self.rfile.read(length) if length else b""
        try:
            out = self.app.predict(data) if path == "/api/predict" else self.app.gradcam(data)
        except BadImage as exc:
            return self._error(
                HTTPStatus.BAD_REQUEST, "cannot read this file as an image: " + str(exc).replace("<bytes>: ", "")
            )
        except Exception as exc:
            return self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"server error: {first_line(exc)}")
        self._json(out)


def make_server(
    app: WebModel, host: str = "127.0.0.1", port: int = 8765, dist: Path | None = None, quiet: bool = False
) -> ThreadingHTTPServer:
    handler = type("BoundHandler", (Handler,), {"app": app, "dist": dist, "quiet": quiet})
    httpd = ThreadingHTTPServer((host, port), handler)
    httpd.daemon_threads = True
    return httpd


def serve(
    uri: str, client=None, host: str = "127.0.0.1", port: int = 8765, install: bool = True, ready=None, say=None
) -> int:
    """Load the model, build the browser model, install the runtime if needed, serve until interrupted."""
    say = say or (lambda m: print(m, file=sys.stderr, flush=True))
    say(f"loading {uri}")
    app = WebModel(uri, client, say=say)
    dist = ensure_runtime(install, say)
    try:
        httpd = make_server(app, host, port, dist)
    except OSError as exc:
        raise WebError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    url = f"http://{host}:{httpd.server_address[1]}/"
    say(f"dermsweep web: {app.ref.describe()} on {url}  (Ctrl-C to stop)")
    if ready:
        ready(url)
    if threading.current_thread() is threading.main_thread():
        import signal

        def _stop(signum, frame):  # `kill`: stop like Ctrl-C, so the temporary ONNX folder is removed
            raise KeyboardInterrupt

        signal.signal(signal.SIGTERM, _stop)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()
        shutil.rmtree(app.workdir, ignore_errors=True)
    return 0


__all__ = ["WebModel", "make_server", "serve", "ensure_runtime"]
