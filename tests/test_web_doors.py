"""`dermsweep web`'s doors, round 2 (issue 25): slow request heads, connection slots, body limits, odd and duplicate
headers, security headers, no tracebacks, a clean stop on SIGTERM.

The HTTP layer is tried on a stand-in model (it decodes with the real load_rgb, so a bad image is a real BadImage):
no TensorFlow, so each test takes seconds. Deadlines are shortened through make_server's own parameters.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from PIL import Image

from dermsweep.data.images import load_rgb
from helpers.config import REPO


class StandIn:
    """What the HTTP layer needs of WebModel: info, predict, gradcam, the ONNX file."""

    onnx_path = None
    onnx_error = "no browser model in these tests"

    def __init__(self, fail: bool = False):
        self.fail = fail

    def info_json(self) -> dict:
        return {"model_name": "stand-in", "class_names": ["a", "b"]}

    def predict(self, data: bytes) -> dict:
        x = load_rgb(data, 8, 8)
        if self.fail:
            raise RuntimeError("secret internal detail /home/someone/model.keras")
        return {"label": "a", "mean": float(x.mean())}

    gradcam = predict


def photo() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((20, 30, 3), 120, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def start(model=None, **kw):
    from dermsweep.web.server import make_server

    httpd = make_server(model or StandIn(), "127.0.0.1", 0, None, quiet=True, **kw)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    port = httpd.server_address[1]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # uvicorn's loop is up once it answers
        if status_of(exchange(port, request(port, "GET", "/api/info"), timeout=5)) == 200:
            return httpd, port
        time.sleep(0.05)
    raise AssertionError("the web server did not start")


@pytest.fixture
def server():
    httpd, port = start()
    yield port
    httpd.shutdown()
    httpd.server_close()


def request(port: int, method: str, path: str, body: bytes = b"", head: str = "", **headers) -> bytes:
    """An HTTP/1.1 request that asks to close; `head` adds raw header lines (duplicates, odd spacing)."""
    fields = {"Host": f"127.0.0.1:{port}", "Connection": "close"}
    if method == "POST":
        fields["Content-Length"] = str(len(body))
    fields.update({k.replace("_", "-"): v for k, v in headers.items()})
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in fields.items() if v is not None]
    return ("\r\n".join(lines) + "\r\n" + head + "\r\n").encode("latin-1") + body


def exchange(port: int, data: bytes, timeout: float = 15.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        try:
            s.sendall(data)
        except (TimeoutError, ConnectionResetError, BrokenPipeError):  # closed early: read what it said
            pass
        return read_to_close(s)


def read_to_close(s: socket.socket, first: bytes = b"") -> bytes:
    """`first` and the rest of an answer, up to the server closing the connection: the head and the body can arrive
    in separate packets (seen under load: the body of a 408 came after the first recv)."""
    chunks = [first]
    try:
        while chunk := s.recv(65536):
            chunks.append(chunk)
    except (TimeoutError, ConnectionResetError):
        pass
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else 0


def headers_of(answer: bytes) -> dict[str, str]:
    head = answer.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head)}


def body_of(answer: bytes) -> dict:
    return json.loads(answer.split(b"\r\n\r\n", 1)[1] or b"{}")


# ---------------------------------------------------------------- slow and silent clients
def test_slow_header_clients_do_not_deny_the_service():
    """16 clients each trickle one header line at a time (the issue's attack, with a 2 s head deadline and a header
    every 0.5 s): a normal request meanwhile is answered 200, and every slow client is cut off with a 408 once its
    head deadline passes, however steadily it keeps sending."""
    httpd, port = start(head_deadline=2.0)
    slow = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(16)]
    try:
        for s in slow:
            s.sendall(f"GET /api/info HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
        stop = threading.Event()

        def trickle():
            i = 0
            while not stop.wait(0.5):
                for s in slow:
                    try:
                        s.sendall(f"X-Slow-{i}: 1\r\n".encode())
                    except OSError:
                        pass
                i += 1

        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        time.sleep(0.7)  # the slow heads are under way and hold connections
        answers = [exchange(port, request(port, "GET", "/api/info"), timeout=10) for _ in range(3)]
        assert [status_of(a) for a in answers] == [200, 200, 200], answers[0][:300]
        cut = []
        for s in slow:
            cut.append(status_of(read_to_close(s)))
        stop.set()
        # each one closed: by its head deadline (408), or pushed out to make room for a normal request (503)
        assert set(cut) <= {408, 503} and cut.count(503) <= len(answers), cut
    finally:
        for s in slow:
            s.close()
        httpd.shutdown()
        httpd.server_close()


def test_silent_clients_past_the_cap_are_pushed_out_not_the_newcomer():
    """40 silent connections against a cap of 16: the oldest idle ones are pushed out (503 + close) to make room,
    so a real request still gets its answer; a connection that sends nothing is closed by the head deadline."""
    httpd, port = start(head_deadline=3.0)
    silent = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(40)]
    try:
        time.sleep(0.5)
        assert status_of(exchange(port, request(port, "GET", "/api/info"), timeout=10)) == 200
        answers = []
        for s in silent:
            answers.append(status_of(read_to_close(s)))
        assert set(answers) <= {408, 503} and answers.count(408) <= 16, answers
        assert httpd.guard.evicted >= 24 and not httpd.guard.open
    finally:
        for s in silent:
            s.close()
        httpd.shutdown()
        httpd.server_close()


def test_when_every_slot_is_serving_a_newcomer_gets_503_at_once():
    """Connections whose requests are being served (head complete, body under way) are not pushed out: past the cap
    a new connection is answered 503 with Retry-After at once, not left hanging."""
    httpd, port = start(max_connections=4)
    busy = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(4)]
    try:
        for s in busy:  # a complete head announcing a body that does not come yet
            s.sendall(request(port, "POST", "/api/predict", Content_Length="1000"))
        time.sleep(0.5)
        answer = exchange(port, request(port, "GET", "/api/info"), timeout=10)
        assert status_of(answer) == 503 and headers_of(answer)["retry-after"] == "1", answer[:300]
        assert "busy" in body_of(answer)["error"]
    finally:
        for s in busy:
            s.close()
    time.sleep(0.5)  # the slots free up as the clients leave
    assert status_of(exchange(port, request(port, "GET", "/api/info"))) == 200
    httpd.shutdown()
    httpd.server_close()


def test_clients_that_do_not_read_their_answer_are_pushed_out(tmp_path):
    """4 slots, 4 clients that ask for a large file and never read it (the server's writes to them pause): a new
    client is still answered; one of the non-readers is dropped to make room."""
    big = tmp_path / "model.onnx"
    big.write_bytes(b"\0" * (64 * 1024 * 1024))
    model = StandIn()
    model.onnx_path = big  # type: ignore[assignment]
    httpd, port = start(model, max_connections=4)
    readers = []
    try:
        for _ in range(4):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(20)
            s.connect(("127.0.0.1", port))
            s.sendall(request(port, "GET", "/model.onnx"))
            readers.append(s)
        time.sleep(2)  # their answers fill the socket buffers; uvicorn pauses writing
        assert all(c.serving for c in httpd.guard.open), "the non-readers should be mid-answer"
        assert status_of(exchange(port, request(port, "GET", "/api/info"), timeout=10)) == 200
        assert httpd.guard.evicted >= 1
    finally:
        for s in readers:
            s.close()
        httpd.shutdown()
        httpd.server_close()


# ---------------------------------------------------------------- bodies
def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(server):
    """413 with a short message as soon as the head arrives: the client has not sent a byte of the body."""
    from dermsweep.web.app import MAX_UPLOAD

    with socket.create_connection(("127.0.0.1", server), timeout=15) as s:
        s.sendall(request(server, "POST", "/api/predict", Content_Length=str(MAX_UPLOAD + 1)))
        answer = read_to_close(s)
    assert status_of(answer) == 413 and "too large" in body_of(answer)["error"]
    assert headers_of(answer)["connection"] == "close"


def test_a_stalled_or_trickled_upload_is_dropped(monkeypatch, server):
    """A body that stops coming is a 408 after the silence limit; one that keeps coming, a byte at a time, is a 408
    once it falls behind the minimum upload rate: neither holds a connection for long."""
    from dermsweep.web import app

    monkeypatch.setattr(app, "SOCKET_TIMEOUT", 1.0)
    with socket.create_connection(("127.0.0.1", server), timeout=15) as s:
        s.sendall(request(server, "POST", "/api/predict", Content_Length="5000") + b"x" * 100)
        answer = read_to_close(s)
    assert status_of(answer) == 408 and "stalled" in body_of(answer)["error"]

    monkeypatch.setattr(app, "BODY_GRACE", 1.5)
    with socket.create_connection(("127.0.0.1", server), timeout=15) as s:
        s.sendall(request(server, "POST", "/api/predict", Content_Length="5000"))
        s.settimeout(0.3)
        answer = b""
        for _ in range(100):  # a byte every 0.3 s: never silent for a second, far under 1 MiB/s
            try:
                s.sendall(b"x")
                answer = s.recv(65536)
                s.settimeout(5)
                answer = read_to_close(s, answer)
                break
            except TimeoutError:
                continue
    assert status_of(answer) == 408 and "longer than" in body_of(answer)["error"], answer[:300]


def test_a_body_is_read_in_chunks_and_counted(monkeypatch, server):
    """The limit holds while reading: with the limit lowered under the declared length, the body is refused at the
    chunk that passes it (a second lock behind Content-Length)."""
    from dermsweep.web import app

    seen = []
    real = app.read_body

    async def spy(request):
        seen.append(request.headers["content-length"])
        return await real(request)

    monkeypatch.setattr(app, "read_body", spy)
    answer = exchange(server, request(server, "POST", "/api/predict", photo()))
    assert status_of(answer) == 200 and seen  # the route reads through read_body
    monkeypatch.setattr(app, "MAX_UPLOAD", 10)
    answer = exchange(server, request(server, "POST", "/api/predict", photo()))
    assert status_of(answer) == 413


# ---------------------------------------------------------------- odd and duplicate headers
@pytest.mark.parametrize(
    "head, why",
    [
        ("Host: evil.example\r\n", "two Host headers (the second one foreign)"),
        ("Transfer-Encoding : chunked\r\n", "a space before the colon (RFC 9112)"),
        ("Content-Length: 5\r\n", "two different Content-Lengths"),
        ("X-Bad\x01Name: 1\r\n", "a control character in a header name"),
    ],
)
def test_malformed_or_duplicate_heads_are_400(server, head, why):
    answer = exchange(server, request(server, "POST", "/api/predict", photo(), head=head))
    assert status_of(answer) == 400, (why, answer[:300])
    assert body_of(answer)["error"].startswith("malformed request")
    assert status_of(exchange(server, request(server, "GET", "/api/info"))) == 200  # still serving


def test_two_origin_headers_are_refused(server):
    """Only one Origin may be checked: with two, the request is refused (the first could be ours, the second not)."""
    head = f"Origin: http://127.0.0.1:{server}\r\nOrigin: http://evil.example\r\n"
    answer = exchange(server, request(server, "POST", "/api/predict", photo(), head=head))
    assert status_of(answer) == 400 and "more than one Origin" in body_of(answer)["error"]


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"Host": "evil.example"}, 403),
        ({"Host": "127.0.0.1.evil.example"}, 403),
        ({"Host": "localhost.evil.example:80"}, 403),
        ({"Host": "127.0.0.1:80:80"}, 400),
        ({"Origin": "http://evil.example"}, 403),
        ({"Origin": "http://127.0.0.1:1"}, 403),  # another port on this machine is another origin
        ({"Sec-Fetch-Site": "cross-site"}, 403),
    ],
)
def test_foreign_hosts_and_origins_are_refused(server, headers, status):
    answer = exchange(server, request(server, "POST", "/api/predict", photo(), **headers))
    assert status_of(answer) == status, answer[:300]


def test_transfer_encoding_is_refused_even_when_well_formed(server):
    head = "Transfer-Encoding: chunked\r\n"
    data = request(server, "POST", "/api/predict", Content_Length=None, head=head) + b"5\r\nhello\r\n0\r\n\r\n"
    answer = exchange(server, data)
    assert status_of(answer) == 411 and "Content-Length" in body_of(answer)["error"]


# ---------------------------------------------------------------- answers
@pytest.mark.parametrize("path", ["/", "/api/info", "/static/app.js", "/nope", "/model.onnx"])
def test_every_answer_carries_the_security_headers(server, path):
    headers = headers_of(exchange(server, request(server, "GET", path)))
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "default-src 'self'" in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY" and headers["referrer-policy"] == "no-referrer"
    assert headers["x-content-type-options"] == "nosniff"


def test_a_bad_image_never_spoils_the_next_request(server):
    """One bad file is its own 400; the good ones before and after it, on the same server, are answered."""
    statuses = []
    for body in (photo(), b"not an image at all", photo(), b"\xff\xd8\xff\xe0" + b"\0" * 40, photo()):
        statuses.append(status_of(exchange(server, request(server, "POST", "/api/predict", body))))
    assert statuses == [200, 400, 200, 400, 200]


def test_an_internal_error_is_a_500_without_details(capfd):
    httpd, port = start(StandIn(fail=True))
    try:
        answer = exchange(port, request(port, "POST", "/api/gradcam", photo()))
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert status_of(answer) == 500
    assert body_of(answer) == {"error": "server error (see the dermsweep web log)"}
    assert b"secret" not in answer and b"Traceback" not in answer
    assert "Traceback" not in capfd.readouterr().err


# ---------------------------------------------------------------- stopping
SERVE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    sys.path.insert(0, sys.argv[1])
    import test_web_doors
    from dermsweep.web import server

    class Loaded(test_web_doors.StandIn):
        def __init__(self, uri, client=None, say=print):
            self.workdir = Path(sys.argv[2])
            self.workdir.mkdir()
            self.ref = type("Ref", (), {"describe": lambda self: "stand-in"})()

    server.WebModel = Loaded
    sys.exit(server.serve("stand-in", install=False, port=0, ready=lambda url: print(url, flush=True)))
    """
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_and_ctrl_c_stop_it_cleanly(tmp_path, sig):
    """`kill` (and Ctrl-C) stop `dermsweep web` with exit code 0, its temporary folder removed, even while a client
    holds a connection open."""
    workdir = tmp_path / "work"
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVE, str(REPO / "tests"), str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), proc.stderr.read() if proc.stderr else ""
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert status_of(exchange(port, request(port, "GET", "/api/info"))) == 200
        held = socket.create_connection(("127.0.0.1", port), timeout=30)
        held.sendall(b"GET /api/info HTTP/1.1\r\n")  # a head under way
        time.sleep(0.3)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
        held.close()
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert "Traceback" not in err and "stopped" in err
    assert not workdir.exists()
