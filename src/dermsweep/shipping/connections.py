"""The servers' connections (the web app's and `dermsweep serve`'s), below HTTP: a deadline for each request head
and a cap on open connections.

uvicorn bounds neither: its keep-alive timeout starts only after a first response, so a client that sends one
header line every few seconds holds its connection for as long as it likes, and `limit_concurrency` answers 503
only once a whole head has arrived. Here (a subclass of uvicorn's h11 protocol, one instance per connection):

- every request head (the first, and each one on a kept-alive connection) must be complete within HEAD_DEADLINE
  seconds of its first byte, or of the connection opening; otherwise the connection gets a 408 and is closed;
- at most `max_connections` connections are open. A new one past the cap pushes out the oldest connection that is
  not being served (still sending its head, or idle between requests) or whose client stopped reading its answer
  (uvicorn paused writing to it): slow, silent or non-reading clients can never hold every slot. Only when every
  slot is serving a request does the newcomer get a 503 at once. (Slow bodies are bounded above HTTP: the web app's
upload rate, serve_guard's body deadline.)
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import ClassVar

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEAD_DEADLINE = 10.0  # seconds for a whole request head (request line and headers)
MAX_CONNECTIONS = 16  # open connections; past it, one not being served is pushed out, else 503


def raw_answer(status: int, reason: str, message: str, retry_after: bool = False) -> bytes:
    """A complete HTTP/1.1 JSON error answer for a connection whose request was never parsed (h11 cannot send it)."""
    body = json.dumps({"error": message}).encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n"
        + ("retry-after: 1\r\n" if retry_after else "")
        + "x-content-type-options: nosniff\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionGuard:
    """The open connections of one server, oldest first, and which of them are being served."""

    def __init__(
        self,
        max_connections: int = MAX_CONNECTIONS,
        head_deadline: float = HEAD_DEADLINE,
        log: Callable[[str], None] | None = None,
    ):
        self.max_connections = max_connections
        self.head_deadline = head_deadline
        self.log = log or (lambda line: None)  # the server's log (it escapes control characters)
        self.open: dict[GuardedH11Protocol, None] = {}  # insertion-ordered: oldest first
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    def admit(self, conn: GuardedH11Protocol) -> bool:
        """Make room for `conn` (pushing out the oldest connection not being served); False if every slot serves."""
        if len(self.open) >= self.max_connections:
            idle = next((c for c in self.open if c.stalled), None)
            if idle is None:
                self.refused += 1
                return False
            self.evicted += 1
            idle.drop(503, "Service Unavailable", "server busy: this connection sent no request in time", True)
        self.open[conn] = None
        return True

    def release(self, conn: GuardedH11Protocol) -> None:
        self.open.pop(conn, None)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a request-head deadline and a connection cap (see the module's docstring).

    Bound to one server's guard by subclassing (`bind`): uvicorn builds each connection's protocol from the class.
    """

    guard: ClassVar[ConnectionGuard]
    serving = False  # a request head has arrived and its response is not complete
    _head_timer = None
    _closed = False

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._refusal = ""  # why h11 refused the request head, for the 400's message
        parse = self.conn.next_event

        def next_event():
            try:
                return parse()
            except h11.RemoteProtocolError as exc:
                self._refusal = str(exc)
                raise

        self.conn.next_event = next_event  # type: ignore[method-assign]

    @property
    def stalled(self) -> bool:
        """Not being served, or its client does not read the answer: may be pushed out for a newcomer."""
        return not self.serving or bool(self.flow is not None and self.flow.write_paused)

    @classmethod
    def bind(cls, guard: ConnectionGuard) -> type[GuardedH11Protocol]:
        return type("BoundGuardedH11Protocol", (cls,), {"guard": guard})

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        if not self.guard.admit(self):
            self.drop(503, "Service Unavailable", "server busy (too many requests at once): try again", True)
            return
        self._start_head_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._stop_head_clock()
        self.guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self.serving and self._head_timer is None:  # the first byte of the next request on a kept-alive one
            self._start_head_clock()
        super().data_received(data)

    def handle_events(self) -> None:
        before = self.cycle
        super().handle_events()
        if self.cycle is not before and not self._closed:  # a request head arrived: it is being served now
            self.serving = True
            self._stop_head_clock()

    def on_response_complete(self) -> None:
        self.serving = False  # idle until the next request's first byte (uvicorn's keep-alive timeout applies)
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        """h11 refused the request head (bad syntax, a space before a colon, a malformed Content-Length...)."""
        reason = f" ({self._refusal[:200]})" if self._refusal else ""
        self.guard.log(f"{(self.client or ('-',))[0]} malformed request{reason}: 400")
        self.drop(
            400,
            "Bad Request",
            f"malformed request{reason}: check the request line and headers (one Host, one plain Content-Length, "
            "no space before a header's colon)",
        )

    def drop(self, status: int, reason: str, message: str, retry_after: bool = False) -> None:
        """Answer `status` on a connection whose request is not being served, and close it."""
        if self._closed or self.transport is None or self.transport.is_closing():
            return
        self._closed = True
        self._stop_head_clock()
        self.guard.release(self)
        try:
            if not self.serving:  # mid-answer, an error would corrupt the stream: just close
                self.transport.write(raw_answer(status, reason, message, retry_after))
        finally:
            self.transport.close()

    def _start_head_clock(self) -> None:
        self._head_timer = self.loop.call_later(self.guard.head_deadline, self._head_expired)

    def _stop_head_clock(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self.serving:
            return
        self.guard.timed_out += 1
        self.guard.log(
            f"{(self.client or ('-',))[0]} request head not complete in {self.guard.head_deadline:.0f} s: 408"
        )
        self.drop(408, "Request Timeout", f"request head not complete within {self.guard.head_deadline:.0f} s")
