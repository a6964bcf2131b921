"""The door of `dermsweep serve`: an ASGI middleware in front of MLflow's scoring app that refuses, early and with a
one-line JSON reason, what MLflow's app would take in whole or answer with a 500.

Every request:
- exactly one `Host` header, naming a host this server was bound to or allowed (`--allow-host`), else 400/403: a
  web page that rebinds its own DNS name to 127.0.0.1 sends its own name as Host, so it gets nothing;
- at most one `Origin` header, and if present it must be http(s)://<an allowed host>[:port], else 403: browsers
  send Origin with cross-site POSTs, so another site's page cannot use the model through a visitor's browser.

`POST /invocations` (MLflow's protocol, otherwise unchanged) also needs:
- one `Content-Type` of application/json or text/csv (MLflow's parquet input is refused: compressed pages could
  expand far beyond the body limit), else 415;
- a body of at most `max_body` bytes: a larger Content-Length is refused before a byte is read (413) and a chunked
  body is counted as it arrives and refused once it passes the limit, so memory never grows with what a client
  sends; the whole body must arrive within `body_seconds` (408), so a trickling client frees its slot;
- JSON that parses, nested at most `max_depth` levels (400): MLflow's parser would recurse into it;
- a free slot: at most `max_reading` requests hold a body (receiving, checking, waiting for or in the model), so
  memory is bounded by max_reading x max_body, and at most `max_predicting` are in the model at once; a request
  that waits longer than `wait_seconds` for a slot gets 503 with Retry-After. A client that trickles its body holds
  a slot for at most `body_seconds`.

Other paths (`/ping`, `/health`, `/version`) pass after the Host and Origin checks.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

INVOCATIONS = "/invocations"
CONTENT_TYPES = ("application/json", "text/csv")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")


@dataclass(frozen=True)
class Limits:
    max_body: int = 32 * 1024 * 1024  # a 20 MB photo in base64 with its JSON fits; images.py caps a file at 50 MB
    max_depth: int = 32  # MLflow's request formats need 4 levels
    body_seconds: float = 30.0  # to receive one whole body
    max_reading: int = 8  # requests holding a body at once
    max_predicting: int = 2  # requests in the model at once (it uses every core already)
    wait_seconds: float = 30.0  # for a free slot, then 503


class Refused(Exception):
    def __init__(self, status: int, message: str, headers: tuple[tuple[bytes, bytes], ...] = ()):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


def allowed_hosts(bound: str, extra: list[str] | tuple[str, ...] = ()) -> frozenset[str]:
    """The host names requests may carry: the bound address, the loopback names when bound to loopback or to every
    interface (then also this machine's name), and any extra names (a DNS name or proxy in front)."""
    import socket

    bound = _host_name(bound)
    names = {bound} if bound not in WILDCARD_BINDS else set()
    if bound in LOOPBACK_NAMES or bound.startswith("127.") or bound in WILDCARD_BINDS:
        names.update(LOOPBACK_NAMES)
    if bound in WILDCARD_BINDS:
        names.update(_host_name(n) for n in (socket.gethostname(), socket.getfqdn()))
    names.update(_host_name(n) for n in extra)
    return frozenset(n for n in names if n)


def _host_name(value: str) -> str:
    """`Host`-style text -> the lower-case host name without port, brackets or trailing dot ('' if malformed)."""
    value = value.strip().lower()
    if value.startswith("["):  # [::1]:5001
        end = value.find("]")
        return value[1:end] if end > 0 else ""
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


class Guard:
    """ASGI middleware enforcing the rules of this module's docstring in front of `app`."""

    def __init__(self, app: App, hosts: frozenset[str], limits: Limits | None = None):
        self.app, self.hosts, self.limits = app, hosts, limits or Limits()
        self._reading: asyncio.Semaphore | None = None
        self._predicting: asyncio.Semaphore | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # lifespan events pass; websockets are not served
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        try:
            headers = _headers(scope)
            self._check_host_and_origin(headers)
            if scope["path"] != INVOCATIONS or scope["method"] != "POST":
                await self.app(scope, receive, send)
                return
            await self._invocations(scope, receive, send, headers)
        except Refused as refused:
            await _answer(send, refused)

    def _check_host_and_origin(self, headers: dict[bytes, list[bytes]]) -> None:
        hosts = headers.get(b"host", [])
        if len(hosts) != 1:
            raise Refused(400, f"expected exactly one Host header, got {len(hosts)}")
        if _host_name(hosts[0].decode("latin-1")) not in self.hosts:
            raise Refused(
                403, f"this server answers only to Host {', '.join(sorted(self.hosts))} (--allow-host adds one)"
            )
        origins = headers.get(b"origin", [])
        if len(origins) > 1:
            raise Refused(400, f"expected at most one Origin header, got {len(origins)}")
        if origins:
            parts = urlsplit(origins[0].decode("latin-1").strip())
            if parts.scheme not in ("http", "https") or _host_name(parts.netloc) not in self.hosts:
                raise Refused(403, "requests from web pages of other origins are refused")

    async def _invocations(self, scope: Scope, receive: Receive, send: Send, headers: dict) -> None:
        limits = self.limits
        types = headers.get(b"content-type", [])
        mime = types[0].decode("latin-1").split(";", 1)[0].strip().lower() if len(types) == 1 else ""
        if mime not in CONTENT_TYPES:
            raise Refused(415, f"POST {INVOCATIONS} needs one Content-Type header: application/json (or text/csv)")
        declared = _content_length(headers)
        if declared is not None and declared > limits.max_body:
            raise Refused(413, _too_large(declared, limits.max_body))
        # a body is held from its first byte until its answer: at most max_reading bodies are in memory at once
        async with _slot(self._semaphore("reading"), limits.wait_seconds):
            body = await _read_body(receive, limits)
            if mime == "application/json":
                await asyncio.to_thread(_check_json, body, limits.max_depth)
            async with _slot(self._semaphore("predicting"), limits.wait_seconds):
                await self.app(scope, _replay(body, receive), send)

    def _semaphore(self, kind: str) -> asyncio.Semaphore:
        # made on first use: inside the server's event loop
        if self._reading is None or self._predicting is None:
            self._reading = asyncio.Semaphore(self.limits.max_reading)
            self._predicting = asyncio.Semaphore(self.limits.max_predicting)
        return self._reading if kind == "reading" else self._predicting


def _headers(scope: Scope) -> dict[bytes, list[bytes]]:
    found: dict[bytes, list[bytes]] = {}
    for name, value in scope.get("headers", []):
        found.setdefault(bytes(name).lower(), []).append(bytes(value))
    return found


def _content_length(headers: dict[bytes, list[bytes]]) -> int | None:
    values = headers.get(b"content-length", [])
    if not values:
        return None
    if len(set(values)) != 1 or not values[0].strip().isdigit():
        raise Refused(400, "Content-Length must be one whole number")
    return int(values[0])


def _too_large(size: int, limit: int) -> str:
    return (
        f"request body too large ({size / 1e6:.1f} MB or more; the limit is {limit / 1e6:.0f} MB): "
        "send fewer or smaller images per request"
    )


class _slot:
    """`async with`: hold one place of a semaphore, or refuse with 503 after waiting `seconds`."""

    def __init__(self, semaphore: asyncio.Semaphore, seconds: float):
        self.semaphore, self.seconds = semaphore, seconds

    async def __aenter__(self) -> None:
        try:
            await asyncio.wait_for(self.semaphore.acquire(), self.seconds)
        except TimeoutError:
            raise Refused(503, "the server is busy: try again shortly", ((b"retry-after", b"5"),)) from None

    async def __aexit__(self, *exc: object) -> None:
        self.semaphore.release()


async def _read_body(receive: Receive, limits: Limits) -> bytes:
    """The request body, refused with 413 as soon as it passes the limit and with 408 if it arrives too slowly."""
    chunks: list[bytes] = []
    size = 0

    async def read() -> None:
        nonlocal size
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise Refused(400, "the client went away")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limits.max_body:
                raise Refused(413, _too_large(size, limits.max_body))
            chunks.append(chunk)
            if not message.get("more_body", False):
                return

    try:
        await asyncio.wait_for(read(), limits.body_seconds)
    except TimeoutError:
        raise Refused(408, f"the request body did not arrive within {limits.body_seconds:.0f} s") from None
    return b"".join(chunks)


def _check_json(body: bytes, max_depth: int) -> None:
    """Refuse a body that is not UTF-8 JSON or is nested deeper than max_depth (400)."""
    if body.count(b"[") + body.count(b"{") > max_depth:  # otherwise it cannot be that deep: skip the parse
        try:
            document = json.loads(body)
        except RecursionError:
            raise Refused(400, f"the JSON is nested too deep (the limit is {max_depth} levels)") from None
        except (ValueError, UnicodeDecodeError) as exc:
            raise Refused(400, f"the body is not valid JSON ({str(exc)[:120]})") from None
        if _depth_over(document, max_depth):
            raise Refused(400, f"the JSON is nested too deep (the limit is {max_depth} levels)")
        return
    try:
        json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Refused(400, f"the body is not valid JSON ({str(exc)[:120]})") from None


def _depth_over(document: Any, max_depth: int) -> bool:
    """Whether any array or object in `document` lies more than max_depth levels deep (iterative: no recursion)."""
    stack = [(document, 1)] if isinstance(document, dict | list) else []
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node
        for child in children:
            if isinstance(child, dict | list):
                if depth + 1 > max_depth:
                    return True
                stack.append((child, depth + 1))
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that gives the app the body already read, then passes on what the client sends next."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _answer(send: Send, refused: Refused) -> None:
    code = {400: "BAD_REQUEST", 403: "PERMISSION_DENIED", 408: "REQUEST_TIMEOUT", 413: "REQUEST_LIMIT_EXCEEDED"}
    body = json.dumps({"error_code": code.get(refused.status, "INVALID_STATE"), "message": refused.message}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *refused.headers,
    ]
    if refused.status in (400, 408, 413):  # the rest of a refused body is not read: end the connection
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": refused.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
