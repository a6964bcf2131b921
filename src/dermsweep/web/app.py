"""The web app's HTTP layer (Starlette): its routes, and the rules every request meets before a route sees it.

Every request is treated as hostile (docs/web.md, "Limits"):
- exactly one Host header, naming this machine (an IP address, localhost or the name it listens on): a web page that
  rebinds its own DNS name to 127.0.0.1 cannot reach the app; at most one Origin header;
- a POST comes from this app's own page (Origin, Sec-Fetch-Site) or from a tool that sends neither (curl);
- a body needs one plain Content-Length of at most MAX_UPLOAD (no chunked uploads); it is read a chunk at a time,
  counted as it arrives, at no less than MIN_UPLOAD_RATE after a short grace (so within BODY_DEADLINE at most) and
  with at most SOCKET_TIMEOUT of silence: a client trickling a body cannot hold a connection slot for long;
- every answer carries the security headers (SECURITY_HEADERS); an unexpected error is a 500 with no details, its
  first line logged; the log escapes control characters.
Request heads and connections are bounded below HTTP (shipping/connections.py).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import sys
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from ..data.images import BadImage
from ..printable import printable
from ..tracking.store import first_line

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
MAX_UPLOAD = 25 * 1024 * 1024  # request body, bytes
SOCKET_TIMEOUT = 10.0  # seconds a client may stay silent while sending a body before it is dropped
BODY_DEADLINE = 60.0  # seconds for a whole upload at most: a client that trickles bytes is dropped too
BODY_GRACE = 5.0  # seconds every upload gets, on top of its size at MIN_UPLOAD_RATE
MIN_UPLOAD_RATE = 1024 * 1024  # bytes/s: loopback and any LAN do far better; a 25 MB photo gets 29 s
MAX_PATH = 1024  # characters of a URL path
LOOPBACK = ("localhost", "localhost.")
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
# The page loads only its own files; onnxruntime-web compiles WebAssembly ('wasm-unsafe-eval', not 'unsafe-eval');
# the Grad-CAM overlay is a data: URL and the preview a blob: URL. No framing (clickjacking), no referrer.
CSP = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


class Refused(Exception):
    """A request answered with an error status; its body (if any) is not read, so the connection is closed."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def error(status: int, message: str, close: bool = False) -> JSONResponse:
    return JSONResponse(
        {"error": message}, status, headers={"cache-control": "no-store", **({"connection": "close"} if close else {})}
    )


# ---------------------------------------------------------------- the rules every request meets
def hostname(host: str) -> str:
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


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
        return True
    except ValueError:
        return False


def one(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    """The value of a header that may appear at most once; Refused(400) if it appears twice."""
    values = [v for k, v in headers if k == name]
    if len(values) > 1:
        raise Refused(HTTPStatus.BAD_REQUEST, f"more than one {name.decode().title()} header: send exactly one")
    return values[0].decode("latin-1").strip() if values else None


def check_host(headers: list[tuple[bytes, bytes]], names: set[str]) -> str:
    """The one Host header, naming this machine; Refused otherwise. Returns it, lower-cased."""
    host = one(headers, b"host") or ""
    name = hostname(host)
    if not name:
        raise Refused(HTTPStatus.BAD_REQUEST, "missing or malformed Host header")
    if not (name in LOOPBACK or is_ip(name) or name in names):
        raise Refused(
            HTTPStatus.FORBIDDEN,
            f"Host {host[:100]!r} is not this server: open it as http://127.0.0.1 or http://localhost "
            "(or start it with --host NAME)",
        )
    return host.lower()


def check_origin(headers: list[tuple[bytes, bytes]], host: str) -> None:
    """A POST comes from this app's own page (or from a tool that sends no Origin, like curl)."""
    origin = one(headers, b"origin")
    if origin is not None and origin.lower() != f"http://{host}":
        raise Refused(HTTPStatus.FORBIDDEN, f"cross-origin request refused (Origin {origin[:100]!r})")
    site = one(headers, b"sec-fetch-site")
    if site is not None and site.lower() not in ("same-origin", "none"):
        raise Refused(HTTPStatus.FORBIDDEN, f"cross-site request refused (Sec-Fetch-Site {site[:40]!r})")


def declared_length(request: Request) -> int:
    """The body's length: one Content-Length, a plain non-negative number, at most MAX_UPLOAD."""
    if "transfer-encoding" in request.headers:
        raise Refused(HTTPStatus.LENGTH_REQUIRED, "send the file with a Content-Length (no chunked uploads)")
    values = {v.strip() for v in request.headers.getlist("content-length")}
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


async def read_body(request: Request) -> bytes:
    """Exactly the declared bytes, counted while they arrive: never more than MAX_UPLOAD in memory, never longer
    than BODY_GRACE + its size at MIN_UPLOAD_RATE (BODY_DEADLINE at most), never more than SOCKET_TIMEOUT of
    silence."""
    length = declared_length(request)
    loop = asyncio.get_running_loop()
    allowed = min(BODY_DEADLINE, BODY_GRACE + length / MIN_UPLOAD_RATE)
    deadline = loop.time() + allowed
    body = bytearray()
    chunks = request.stream().__aiter__()
    while True:
        left = deadline - loop.time()
        try:
            chunk = await asyncio.wait_for(anext(chunks), timeout=max(0.0, min(SOCKET_TIMEOUT, left)))
        except StopAsyncIteration:
            break
        except TimeoutError as exc:
            why = f"upload took longer than {allowed:.0f} s" if left <= SOCKET_TIMEOUT else "upload stalled"
            raise Refused(HTTPStatus.REQUEST_TIMEOUT, why) from exc
        body += chunk
        if len(body) > min(length, MAX_UPLOAD):  # h11 frames the body by Content-Length; this is the second lock
            raise Refused(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"body longer than its Content-Length ({length})")
    if len(body) < length:
        raise Refused(HTTPStatus.BAD_REQUEST, f"upload ended early ({len(body)} of {length} bytes)")
    return bytes(body)


def inside(root: Path, rel: str) -> Path | None:
    """root/rel if it stays inside root after resolving links; None for anything odd (.., NUL, loops...)."""
    if "\x00" in rel or len(rel) > MAX_PATH:
        return None
    try:
        target = (root / rel).resolve()
        return target if target.is_relative_to(root.resolve()) and target.is_file() else None
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a symlink loop (Python 3.11)
        return None


def file_response(path: Path | None, cache: bool = False) -> Response:
    if path is None:
        return error(HTTPStatus.NOT_FOUND, "not found")
    try:
        if not path.is_file():
            return error(HTTPStatus.NOT_FOUND, "not found")
    except (OSError, ValueError):  # unreadable, name too long...: not found, never a traceback
        return error(HTTPStatus.NOT_FOUND, "not found")
    ctype = TYPES.get(path.suffix) or "application/octet-stream"
    return FileResponse(path, media_type=ctype, headers={"cache-control": "max-age=3600" if cache else "no-store"})


# ---------------------------------------------------------------- routes
class ServedModel(Protocol):
    """What the app serves (server.WebModel): its info, the browser model file, and the two classifying calls."""

    onnx_path: Path | None
    onnx_error: str | None

    def info_json(self) -> dict: ...
    def predict(self, data: bytes) -> dict: ...
    def gradcam(self, data: bytes) -> dict: ...


def routes(model: ServedModel, dist: Path | None) -> list[Route]:
    async def page(request: Request) -> Response:
        return file_response(STATIC / "index.html")

    async def info(request: Request) -> Response:
        return JSONResponse(dict(model.info_json(), runtime=bool(dist)), headers={"cache-control": "no-store"})

    async def onnx(request: Request) -> Response:
        if model.onnx_path is None:
            return error(HTTPStatus.NOT_FOUND, model.onnx_error or "no browser model")
        return file_response(model.onnx_path)

    async def static(request: Request) -> Response:
        return file_response(inside(STATIC, request.path_params["path"]))

    async def vendor(request: Request) -> Response:
        if dist is None:
            return error(HTTPStatus.NOT_FOUND, "onnxruntime-web is not installed (npm)")
        return file_response(inside(dist, request.path_params["path"]), cache=True)

    async def favicon(request: Request) -> Response:
        return Response(status_code=204, media_type="image/x-icon")

    def classify(run: Callable[[bytes], dict]):
        async def endpoint(request: Request) -> Response:
            check_origin(request.scope["headers"], request.headers.get("host", "").strip().lower())
            data = await read_body(request)
            try:
                out = await run_in_threadpool(run, data)
            except BadImage as exc:
                reason = str(exc).replace("<bytes>: ", "")
                return error(HTTPStatus.BAD_REQUEST, "cannot read this file as an image: " + reason)
            return JSONResponse(out, headers={"cache-control": "no-store"})

        return endpoint

    return [
        Route("/", page),
        Route("/index.html", page),
        Route("/api/info", info),
        Route("/model.onnx", onnx),
        Route("/static/{path:path}", static),
        Route("/vendor/{path:path}", vendor),
        Route("/favicon.ico", favicon),
        Route("/api/predict", classify(model.predict), methods=["POST"]),
        Route("/api/gradcam", classify(model.gradcam), methods=["POST"]),
    ]


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    # closed: a POST's body is not read, and the connection is not left to swallow it
    return error(status, "not found" if status == 404 else HTTPStatus(status).phrase.lower(), close=True)


async def _refused(request: Request, exc: Exception) -> Response:
    return error(getattr(exc, "status", HTTPStatus.BAD_REQUEST), str(exc), close=True)


async def _internal(request: Request, exc: Exception) -> Response:
    # Starlette re-raises after answering: Doors logs the first line; the client sees no details
    return error(HTTPStatus.INTERNAL_SERVER_ERROR, "server error (see the dermsweep web log)", close=True)


# ---------------------------------------------------------------- the app
class Doors:
    """ASGI middleware: the Host rules, refusals, security headers, no tracebacks, an escaped access log."""

    def __init__(self, app: Any, names: set[str], quiet: bool = False):
        self.app = app
        self.names = names
        self.quiet = quiet

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = {"status": 0}

        async def guarded_send(message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                message = dict(message, headers=[*message.get("headers", []), *SECURITY_HEADERS])
            await send(message)

        try:
            check_host(scope["headers"], self.names)
            await self.app(scope, receive, guarded_send)
        except Refused as exc:
            if not state["status"]:
                await error(exc.status, str(exc), close=True)(scope, receive, guarded_send)
        except ClientDisconnect:
            pass  # nobody to answer
        except Exception as exc:
            self.log(f"internal error on {scope.get('path', '')[:200]}: {first_line(exc)}")
            if not state["status"]:
                response = error(HTTPStatus.INTERNAL_SERVER_ERROR, "server error (see the dermsweep web log)", True)
                await response(scope, receive, guarded_send)
        finally:
            client = scope.get("client") or ("-", 0)
            self.log(f"{client[0]} {scope['method']} {scope.get('path', '')[:MAX_PATH]} {state['status']}")

    def log(self, line: str) -> None:
        if not self.quiet:
            # escaped: a URL cannot send ESC sequences or bidi overrides to the operator's terminal
            sys.stderr.write(printable(line) + "\n")


def build_app(model: ServedModel, dist: Path | None, names: set[str], quiet: bool = False) -> Doors:
    """The ASGI app for uvicorn: Starlette's routes inside the Doors middleware."""
    handlers = {HTTPException: _http_error, Refused: _refused, Exception: _internal}  # all answers are JSON
    starlette = Starlette(routes=routes(model, dist), exception_handlers=handlers)
    return Doors(starlette, names, quiet)
