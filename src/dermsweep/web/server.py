"""`dermsweep web`: a local page that classifies a lesion photo with the promoted model, in the browser.

    GET  /                 the page (static/index.html, app.js, style.css)
    GET  /vendor/<file>    onnxruntime-web's dist/ files, from node_modules/ beside this file (npm, served locally)
    GET  /model.onnx       the model for the browser: ONNX with the training resize baked in (browser_model.py)
    GET  /api/info         model version, metrics, promotion date, class names, input size
    POST /api/predict      body = the image file's bytes -> probabilities (server-side fallback, predict.py)
    POST /api/gradcam      body = the image file's bytes -> Grad-CAM overlay PNG (data URL) and heat-map grid

Standard library only (ThreadingHTTPServer); the model is called under a lock (one TensorFlow call at a time).

Every request is treated as hostile (docs/web.md, "Limits"): a Host that is not this machine's is refused (DNS
rebinding), a POST from another origin is refused (any page the user visits could send one), a body needs a
Content-Length of at most MAX_UPLOAD, a silent client is dropped after SOCKET_TIMEOUT, at most MAX_CONNECTIONS
connections get a thread (more get 503), at most DECODERS images are decoded at once (each can take a few hundred MB),
images go through the decoder's rules (data/images.py: pixel cap before decoding...), and every bad path is a 4xx.
"""

from __future__ import annotations

import ipaddress
import json
import mimetypes
import os
import re
import shutil
import socket
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

from ..data.images import MAX_PIXELS, BadImage, load_rgb
from ..diagnoses import answer
from ..errors import DermsweepError
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
MAX_UPLOAD = 25 * 1024 * 1024  # request body, bytes
SOCKET_TIMEOUT = 10.0  # seconds a client may stay silent (reading a request, sending an upload) before it is dropped
BODY_DEADLINE = 60.0  # seconds for a whole upload: a client that trickles bytes is dropped too
MAX_CONNECTIONS = 16  # connections served at once (one thread each); more are answered 503 at once
DECODERS = 2  # images decoded at once; the rest wait (bounds memory: one decode of a large photo is ~300 MB)
MAX_PATH = 1024  # characters of a URL path
LOOPBACK = ("localhost", "localhost.")
# Request lines and headers are logged with control characters escaped: a URL cannot send ESC sequences to the terminal
LOG_SAFE = str.maketrans({c: f"\\x{c:02x}" for c in (*range(0x20), *range(0x7F, 0xA0))})
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
        """The training preprocessing (load_rgb), DECODERS at a time. Raises BadImage."""
        with self.decoding:
            return load_rgb(data, self.height, self.width)

    def predict(self, data: bytes) -> dict:
        x = self.pixels(data)
        with self.lock:
            p = self.predictor.predict_arrays(x[None])[0]
        return answer(p, self.class_names, self.predictor.full_names, operating_point=self.predictor.operating_point)

    def gradcam(self, data: bytes) -> dict:
        from .gradcam import GradCAM, data_url, overlay_png

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
class Refused(Exception):
    """A request answered with an error status before its body was read."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Handler(BaseHTTPRequestHandler):
    server_version = "dermsweep-web"
    timeout = SOCKET_TIMEOUT  # StreamRequestHandler applies it to the socket: every read and write
    app: WebModel
    dist: Path | None
    quiet = False
    server: WebServer

    def log_message(self, fmt, *args):
        if not self.quiet:
            sys.stderr.write(f"{self.address_string()} {(fmt % args).translate(LOG_SAFE)}\n")

    def _send(self, status: int, body: bytes, ctype: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, obj, status: int = 200) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json({"error": message}, status)

    def _file(self, path: Path | None, cache: bool = False) -> None:
        try:
            if path is None or not path.is_file():
                return self._error(HTTPStatus.NOT_FOUND, "not found")
            body = path.read_bytes()
        except (OSError, ValueError):  # unreadable, name too long, NUL byte...: not found, never a traceback
            return self._error(HTTPStatus.NOT_FOUND, "not found")
        ctype = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        self._send(200, body, ctype, cache)

    @staticmethod
    def _inside(root: Path, rel: str) -> Path | None:
        """root/rel if it stays inside root after resolving links; None for anything odd (.., NUL, loops...)."""
        if "\x00" in rel or len(rel) > MAX_PATH:
            return None
        try:
            target = (root / rel).resolve()
            return target if target.is_relative_to(root.resolve()) else None
        except (OSError, ValueError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
            return None

    def _guarded(self, handle) -> None:
        """Run a method's handler: a refusal is its status, an unexpected error a 500 with no details."""
        try:
            self._check_host()
            handle()
        except Refused as exc:
            self.close_connection = True  # the body, if any, is not read: the connection cannot be reused
            self._last_word(exc.status, str(exc))
        except TimeoutError:
            raise  # BaseHTTPRequestHandler logs it and closes the connection
        except OSError:  # the client went away
            self.close_connection = True
        except Exception as exc:
            self.log_error("internal error on %s: %s", self.path[:200], first_line(exc))
            self.close_connection = True
            self._last_word(HTTPStatus.INTERNAL_SERVER_ERROR, "server error (see the dermsweep web log)")

    def _last_word(self, status: int, message: str) -> None:
        """An error answer on a connection that is closing; a client already gone is no error of ours."""
        try:
            self._error(status, message)
        except OSError:
            pass

    def _check_host(self) -> None:
        """The Host header names this machine (an IP address, localhost or the name we listen on): a web page
        that rebinds its own DNS name to 127.0.0.1 cannot reach the API."""
        host = (self.headers.get("Host") or "").strip()
        name = _hostname(host)
        if not name:
            raise Refused(HTTPStatus.BAD_REQUEST, "missing or malformed Host header")
        if not (name in LOOPBACK or _is_ip(name) or name in self.server.names):
            raise Refused(
                HTTPStatus.FORBIDDEN,
                f"Host {host[:100]!r} is not this server: open it as http://127.0.0.1 or http://localhost "
                "(or start it with --host NAME)",
            )

    def _check_origin(self) -> None:
        """A POST comes from this app's own page (or from a tool that sends no Origin, like curl)."""
        origin = self.headers.get("Origin")
        host = (self.headers.get("Host") or "").strip().lower()
        if origin is not None and origin.strip().lower() != f"http://{host}":
            raise Refused(HTTPStatus.FORBIDDEN, f"cross-origin request refused (Origin {origin[:100]!r})")
        site = self.headers.get("Sec-Fetch-Site")
        if site is not None and site.strip().lower() not in ("same-origin", "none"):
            raise Refused(HTTPStatus.FORBIDDEN, f"cross-site request refused (Sec-Fetch-Site {site[:40]!r})")

    def _length(self) -> int:
        """The body's length: one Content-Length, a plain non-negative number, at most MAX_UPLOAD."""
        if self.headers.get("Transfer-Encoding"):
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "send the file with a Content-Length (no chunked uploads)")
        values = {v.strip() for v in self.headers.get_all("Content-Length") or []}
        if not values:
            raise Refused(HTTPStatus.LENGTH_REQUIRED, "missing Content-Length")
        text = values.pop()
        if values or not re.fullmatch(r"[0-9]{1,15}", text):
            raise Refused(HTTPStatus.BAD_REQUEST, "bad Content-Length (one non-negative whole number of bytes)")
        length = int(text)
        if length > MAX_UPLOAD:
            raise Refused(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"file too large ({length / 1e6:.1f} MB; limit {MAX_UPLOAD / 1e6:.0f} MB)",
            )
        return length

    def _body(self, length: int) -> bytes:
        """Read exactly `length` bytes within BODY_DEADLINE (each read also within SOCKET_TIMEOUT)."""
        deadline = time.monotonic() + BODY_DEADLINE
        chunks, left = [], length
        while left:
            if time.monotonic() > deadline:
                raise Refused(HTTPStatus.REQUEST_TIMEOUT, f"upload took longer than {BODY_DEADLINE:.0f} s")
            try:
                chunk = self.rfile.read1(min(left, 1 << 16))  # one socket read: a trickle cannot outlast the deadline
            except TimeoutError as exc:
                raise Refused(HTTPStatus.REQUEST_TIMEOUT, f"no data for {SOCKET_TIMEOUT:.0f} s") from exc
            if not chunk:
                raise Refused(HTTPStatus.BAD_REQUEST, f"upload ended early ({length - left} of {length} bytes)")
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        self._guarded(self._get)

    def do_POST(self):
        self._guarded(self._post)

    def _get(self) -> None:
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
            return self._file(self._inside(STATIC, path[len("/static/") :]))
        if path.startswith("/vendor/"):
            if self.dist is None:
                return self._error(HTTPStatus.NOT_FOUND, "onnxruntime-web is not installed (npm)")
            return self._file(self._inside(self.dist, path[len("/vendor/") :]), cache=True)
        if path == "/favicon.ico":
            return self._send(204, b"", "image/x-icon")
        return self._error(HTTPStatus.NOT_FOUND, "not found")

    def _post(self) -> None:
        path = urlparse(self.path).path
        if path not in ("/api/predict", "/api/gradcam"):
            raise Refused(HTTPStatus.NOT_FOUND, "not found")
        self._check_origin()
        data = self._body(self._length())
        try:
            out = self.app.predict(data) if path == "/api/predict" else self.app.gradcam(data)
        except BadImage as exc:
            return self._error(
                HTTPStatus.BAD_REQUEST, "cannot read this file as an image: " + str(exc).replace("<bytes>: ", "")
            )
        self._json(out)


def _hostname(host: str) -> str:
    """The name part of a Host header ('[::1]:8765' -> '::1', 'LocalHost:80' -> 'localhost'); '' if malformed."""
    if host.startswith("["):
        name, sep, rest = host[1:].partition("]")
        if not sep or (rest and not re.fullmatch(r":[0-9]{1,5}", rest)):
            return ""
    else:
        name, _, port = host.partition(":")
        if port and not re.fullmatch(r"[0-9]{1,5}", port):
            return ""
    name = name.lower()
    return name if re.fullmatch(r"[a-z0-9.:_-]{1,253}", name) else ""


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


class WebServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most `max_connections` handler threads: one more connection is answered 503."""

    daemon_threads = True

    def __init__(self, address, handler, max_connections: int = MAX_CONNECTIONS):
        super().__init__(address, handler)
        self.slots = threading.BoundedSemaphore(max_connections)
        host = str(address[0]).lower()
        # Host names this server answers to besides IP addresses and localhost: the one it listens on, this machine's
        self.names = {n for n in (host, socket.gethostname().lower()) if n and not _is_ip(n)}

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            return self._busy(request)
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def _busy(self, request) -> None:
        body = json.dumps({"error": "server busy (too many connections): try again"}).encode()
        head = (
            "HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
            f"Connection: close\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            request.settimeout(1.0)
            request.sendall(head.encode() + body)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)


def make_server(
    app: WebModel,
    host: str = "127.0.0.1",
    port: int = 8765,
    dist: Path | None = None,
    quiet: bool = False,
    max_connections: int = MAX_CONNECTIONS,
) -> WebServer:
    handler = type("BoundHandler", (Handler,), {"app": app, "dist": dist, "quiet": quiet})
    return WebServer((host, port), handler, max_connections)


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
