"""`dermsweep web`: a local page that classifies a lesion photo with the promoted model, in the browser.

    GET  /                 the page (static/index.html, app.js, style.css)
    GET  /vendor/<file>    onnxruntime-web's dist/ files, from node_modules/ beside this file (npm, served locally)
    GET  /model.onnx       the model for the browser: ONNX with the training resize baked in (browser_model.py)
    GET  /api/info         model version, metrics, training data (from its run), class names, input size
    POST /api/predict      body = the image file's bytes -> probabilities (server-side fallback, predict.py)
    POST /api/gradcam      body = the image file's bytes -> Grad-CAM overlay PNG (data URL), heat-map grid, colours

Starlette on uvicorn: app.py holds the routes and the rules every request meets (Host, Origin, body limits, security
headers), shipping/connections.py the request-head deadline and connection cap. Here: the model (called under a
lock, one TensorFlow call at a time; at most DECODERS images decoded at once, each can take a few hundred MB), the
browser runtime, and the server's start and stop.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..data.images import MAX_PIXELS, load_rgb
from ..diagnoses import answer
from ..errors import DermsweepError
from ..shipping.connections import HEAD_DEADLINE, MAX_CONNECTIONS, ConnectionGuard, GuardedH11Protocol
from ..shipping.predict import Predictor
from ..shipping.training_data import TrainingData, from_run
from ..tracking import run_format as rf
from ..tracking.model_ref import load
from ..tracking.store import first_line
from .app import MAX_UPLOAD, build_app, is_ip

if TYPE_CHECKING:
    from .gradcam import GradCAM

HERE = Path(__file__).resolve().parent
ORT_VERSION = "1.30.0"
ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
DECODERS = 2  # images decoded at once; the rest wait (bounds memory: one decode of a large photo is ~300 MB)


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
        self.decoding = threading.BoundedSemaphore(DECODERS)
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
        """The training preprocessing (load_rgb: strict, a truncated or corrupt JPEG raises), DECODERS at a time.
        Raises BadImage."""
        with self.decoding:
            return load_rgb(data, self.height, self.width)

    def predict(self, data: bytes) -> dict:
        x = self.pixels(data)
        with self.lock:
            p = self.predictor.predict_arrays(x[None])[0]
        return answer(p, self.class_names, self.predictor.full_names, operating_point=self.predictor.operating_point)

    def gradcam(self, data: bytes) -> dict:
        from .gradcam import GradCAM, colour_scale, data_url, overlay_png

        x = self.pixels(data)
        t = time.perf_counter()
        with self.lock:
            if self._gradcam is None:
                self._gradcam = GradCAM(self.model)
            cam, probs = self._gradcam(x[None].astype(np.float32))
        out = answer(probs, self.class_names, self.predictor.full_names, operating_point=self.predictor.operating_point)
        out.update(
            layer=self._gradcam.layer,
            heatmap=np.round(cam, 4).tolist(),
            overlay=data_url(overlay_png(x, cam)),
            scale=colour_scale(),  # the overlay's colours from low to high, for the page's legend
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
            operating_point=self.predictor.operating_point,
            max_pixels=MAX_PIXELS,
            max_upload=MAX_UPLOAD,
            onnx={"url": "model.onnx", "input": "pixels", "output": self.onnx_output, "error": self.onnx_error}
            if self.onnx_path or self.onnx_error
            else None,
        )


def describe(ref, client) -> dict:
    """Version, source run, validation/test balanced accuracy (with 95% intervals when logged), promotion date and
    what the model was trained and scored on, all read from the registry and the run, for the page."""
    info: dict = {
        "uri": ref.uri,
        "model_name": ref.model_name,
        "version": ref.version,
        "run_id": ref.run_id,
        "description": ref.describe(),
        "val_balanced_accuracy": None,
        "test_balanced_accuracy": None,
        "intervals": {},
        "promoted_at": None,
        "aliases": [],
        "training_data": TrainingData().as_dict(),  # "not recorded" until the run says otherwise
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
        if ref.run_id:
            run = client.get_run(ref.run_id)
            info["training_data"] = from_run(run).as_dict()
            metrics = run.data.metrics
            for key, name in (("val", "final_val/balanced_accuracy"), ("test", "test/balanced_accuracy")):
                info[f"{key}_balanced_accuracy"] = rf.read(metrics, name)
                lo, hi = (metrics.get(f"{rf.canonical(name)}_{end}95") for end in ("lo", "hi"))
                if lo is not None and hi is not None:
                    info["intervals"][key] = [lo, hi]
    except Exception as exc:
        info["info_error"] = first_line(exc)
    return info


# ---------------------------------------------------------------- the server (uvicorn)
class WebServer:
    """uvicorn serving the app on a socket bound at once (errors surface here; port 0 picks a free port), with the
    request-head deadline and connection cap of shipping/connections.py. serve_forever() blocks; shutdown() from another
    thread stops it (socketserver's interface, which the tests and serve() use)."""

    def __init__(
        self,
        app: WebModel,
        host: str,
        port: int,
        dist: Path | None,
        quiet: bool,
        max_connections: int,
        head_deadline: float,
    ) -> None:
        import uvicorn

        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.socket = socket.create_server((host, port), family=family, backlog=128)
        self.server_address = self.socket.getsockname()[:2]
        # Host names this server answers to besides IP addresses and localhost: the one it listens on, this machine's
        names = {n for n in (host.lower(), socket.gethostname().lower()) if n and not is_ip(n)}
        asgi = build_app(app, dist, names, quiet)
        self.guard = ConnectionGuard(max_connections, head_deadline, asgi.log)
        config = uvicorn.Config(
            asgi,
            http=GuardedH11Protocol.bind(self.guard),
            ws="none",
            lifespan="off",
            log_config=None,
            access_log=False,  # Doors logs each request, escaped
            server_header=False,
            timeout_keep_alive=5,  # seconds an idle kept-alive connection stays open
            timeout_graceful_shutdown=3,  # on stop, seconds for requests in flight before they are cancelled
        )
        self.server = uvicorn.Server(config)
        # uvicorn warns once per malformed request ("Invalid HTTP request received."): the client got the reason
        logging.getLogger("uvicorn.error").setLevel(logging.ERROR)
        self.stopped = threading.Event()

    def serve_forever(self) -> None:
        """Serve until shutdown(), Ctrl-C or SIGTERM (uvicorn handles both in the main thread, then re-raises)."""
        self.stopped.clear()
        try:
            self.server.run(sockets=[self.socket])
        finally:
            self.stopped.set()

    def shutdown(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.stopped.wait(timeout)

    def server_close(self) -> None:
        self.socket.close()


def make_server(
    app: WebModel,
    host: str = "127.0.0.1",
    port: int = 8765,
    dist: Path | None = None,
    quiet: bool = False,
    max_connections: int = MAX_CONNECTIONS,
    head_deadline: float = HEAD_DEADLINE,
) -> WebServer:
    return WebServer(app, host, port, dist, quiet, max_connections, head_deadline)


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
    url = f"http://{f'[{host}]' if ':' in host else host}:{httpd.server_address[1]}/"
    say(f"dermsweep web: {app.ref.describe()} on {url}  (Ctrl-C to stop)")
    if ready:
        ready(url)
    if threading.current_thread() is threading.main_thread():
        import signal

        def _stop(signum, frame):  # `kill`: stop like Ctrl-C, so the temporary ONNX folder is removed
            raise KeyboardInterrupt

        # Ctrl-C too: with Python's default SIGINT handler asyncio installs its own, and uvicorn's re-raised SIGINT
        # could then land after the loop ended and be dropped (exit 0 without "stopped", seen in CI).
        signal.signal(signal.SIGTERM, _stop)
        signal.signal(signal.SIGINT, _stop)
    try:
        httpd.serve_forever()  # uvicorn stops gracefully on Ctrl-C/SIGTERM, restores our handlers, re-raises the signal
    except KeyboardInterrupt:
        say("dermsweep web: stopped")
    finally:
        httpd.server_close()
        shutil.rmtree(app.workdir, ignore_errors=True)
    return 0


__all__ = ["WebModel", "make_server", "serve", "ensure_runtime"]
