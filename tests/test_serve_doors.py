"""`dermsweep serve`'s door: the guard's rules driven through ASGI directly, then the real command over sockets
(hostile requests, memory, and SIGTERM leaving no process and no open port)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dermsweep.shipping.serve_guard import Guard, Limits, allowed_hosts
from helpers.jpegs import cut_in_half, photo_jpeg
from helpers.servers import alive, free_port, http, huge_body, post, rss_mb, tree_of

HOSTS = allowed_hosts("127.0.0.1")


def call(guard: Guard, headers: dict | list, body_chunks=(b"",), method="POST", path="/invocations", pause=0.0):
    """Run one request through the guard. Returns (status, JSON or text answer, what the inner app received, how
    many body chunks the guard asked for)."""
    seen: dict = {"called": False, "body": b"", "reads": 0}
    sent: list = []
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(k.lower().encode(), v.encode()) for k, v in pairs],
    }
    chunks = list(body_chunks)

    async def receive():
        i = seen["reads"]
        seen["reads"] += 1
        if pause:
            await asyncio.sleep(pause)
        if i >= len(chunks):
            return {"type": "http.disconnect"}
        return {"type": "http.request", "body": chunks[i], "more_body": i < len(chunks) - 1}

    async def send(message):
        sent.append(message)

    async def inner(scope, receive, send):
        seen["called"] = True
        while True:
            message = await receive()
            seen["body"] += message.get("body", b"")
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    guard.app = inner
    asyncio.run(guard(scope, receive, send))
    status = sent[0]["status"]
    text = b"".join(m.get("body", b"") for m in sent[1:])
    return status, json.loads(text), seen


def guard(**limits) -> Guard:
    return Guard(None, HOSTS, Limits(**limits))  # type: ignore[arg-type]  # call() sets the inner app


JSON = {"Host": "127.0.0.1:5001", "Content-Type": "application/json"}
GOOD = json.dumps({"dataframe_records": [{"image": "aGVsbG8="}]}).encode()


def test_a_good_request_reaches_mlflow_with_its_body_unchanged():
    status, _, seen = call(guard(), JSON, [GOOD[:10], GOOD[10:]])
    assert status == 200 and seen["called"] and seen["body"] == GOOD
    assert call(guard(), {"Host": "localhost:5001"}, method="GET", path="/ping")[0] == 200


@pytest.mark.parametrize(
    "headers, status",
    [
        ({"Host": "evil.example:5001", "Content-Type": "application/json"}, 403),  # DNS rebinding
        ({"Host": "127.0.0.1.evil.example", "Content-Type": "application/json"}, 403),
        ([("Host", "127.0.0.1"), ("Host", "evil.example"), ("Content-Type", "application/json")], 400),
        ({"Content-Type": "application/json"}, 400),  # no Host at all
        ({**JSON, "Origin": "http://evil.example"}, 403),
        ({**JSON, "Origin": "null"}, 403),
        ([*JSON.items(), ("Origin", "http://127.0.0.1:5001"), ("Origin", "http://evil.example")], 400),
    ],
)
def test_host_and_origin_must_name_this_server(headers, status):
    got, answer, seen = call(guard(), headers, [GOOD])
    assert got == status and not seen["called"] and answer["message"]
    assert call(guard(), {**JSON, "Origin": "http://localhost:5001"}, [GOOD])[0] == 200  # its own page


def test_allowed_hosts():
    assert {"127.0.0.1", "localhost", "::1"} <= allowed_hosts("127.0.0.1")
    assert allowed_hosts("lesions.example.org") == {"lesions.example.org"}
    assert "lesions.example.org" in allowed_hosts("127.0.0.1", ["Lesions.Example.org."])
    assert {"localhost", socket.gethostname().lower()} <= allowed_hosts("0.0.0.0")
    assert call(guard(), {**JSON, "Host": "[::1]:5001"}, [GOOD])[0] == 200


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/vnd.apache.parquet", ""])
def test_invocations_needs_a_json_or_csv_content_type(content_type):
    headers = {"Host": "127.0.0.1"} | ({"Content-Type": content_type} if content_type is not None else {})
    status, answer, seen = call(guard(), headers, [GOOD])
    assert status == 415 and "Content-Type" in answer["message"] and not seen["called"]


def test_a_body_over_the_limit_is_refused_before_it_is_read():
    declared = {**JSON, "Content-Length": str(210 * 1024 * 1024)}
    status, answer, seen = call(guard(), declared, [b"x" * 1024] * 4)
    assert status == 413 and "too large" in answer["message"] and seen["reads"] == 0 and not seen["called"]
    # chunked (no length): refused once the count passes the limit, the rest never asked for
    status, _, seen = call(guard(max_body=10_000), JSON, [b"x" * 4096] * 1000)
    assert status == 413 and seen["reads"] == 3 and not seen["called"]
    assert call(guard(), {**JSON, "Content-Length": "12, 13"}, [GOOD])[0] == 400


def test_deep_or_broken_json_is_a_400_not_a_500():
    deep = b"[" * 1000 + b"]" * 1000
    for body, reason in [(deep, "nested too deep"), (b'{"a": ' * 33 + b"1" + b"}" * 33, "nested too deep")]:
        status, answer, seen = call(guard(), JSON, [body])
        assert status == 400 and reason in answer["message"] and not seen["called"]
    for body in (b'{"dataframe_records": [', b"\xff\xfe", b"[" * 40 + b"]" * 39):
        status, answer, _ = call(guard(), JSON, [body])
        assert status == 400 and "not valid JSON" in answer["message"]
    assert call(guard(), JSON, [b'{"a": ' * 31 + b"1" + b"}" * 31])[0] == 200


def test_a_trickling_body_is_cut_off_and_a_busy_server_says_so():
    status, answer, _ = call(guard(body_seconds=0.3), JSON, [b" "] * 100, pause=0.05)
    assert status == 408 and "did not arrive" in answer["message"]

    async def two_at_once():
        g = guard(max_predicting=1, wait_seconds=0.2)
        release = asyncio.Event()
        statuses = []

        async def slow(scope, receive, send):
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        g.app = slow

        async def one():
            sent = []

            async def receive():
                return {"type": "http.request", "body": GOOD, "more_body": False}

            async def send(message):
                sent.append(message)

            scope = {"type": "http", "method": "POST", "path": "/invocations"}
            scope["headers"] = [(k.lower().encode(), v.encode()) for k, v in JSON.items()]
            await g(scope, receive, send)
            statuses.append(sent[0]["status"])

        first = asyncio.create_task(one())
        await asyncio.sleep(0.05)
        await one()  # waits 0.2 s for the slot the first holds
        release.set()
        await first
        return statuses

    assert asyncio.run(two_at_once()) == [503, 200]


# --- the real command over sockets ---


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`dermsweep serve` on a free port for the registered champion, its process tree and its log."""
    from helpers.shipping import activate, champion_of, shared_store

    store = shared_store(tmp_path_factory)
    with pytest.MonkeyPatch.context() as mp:
        activate(store, mp)
        uri = champion_of(store, "serve-doors")
    port = free_port()
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = dict(os.environ, MLFLOW_TRACKING_URI=store.uri, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [str(Path(sys.executable).with_name("dermsweep")), "serve", "--model", uri, "--port", str(port)]
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, log_path.read_text()[-3000:]
            try:
                if http(port, f"GET /ping HTTP/1.1\nHost: 127.0.0.1:{port}\nConnection: close\n", timeout=5)[0] == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "dermsweep serve did not answer /ping in 240 s"
            time.sleep(1)
        started = tree_of(proc.pid)
        yield proc, port, log_path
    finally:
        # whatever is left of it, orphans included (a server that does not stop its children leaves them)
        for pid in tree_of(proc.pid) | locals().get("started", set()):
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=10)


def png_b64() -> str:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.mark.slow
def test_dermsweep_serve_refuses_hostile_requests_and_keeps_mlflows_protocol(server):
    proc, port, log_path = server
    rows = [{"image": png_b64()}, {"image": base64.b64encode(cut_in_half(photo_jpeg())).decode()}]
    status, body = post(port, json.dumps({"dataframe_records": rows}).encode())
    assert status == 200, body
    predictions = json.loads(body)["predictions"]
    assert predictions[0]["error"] is None and abs(sum(predictions[0]["probabilities"].values()) - 1) < 1e-4
    assert predictions[1]["label"] is None and "corrupt or truncated JPEG" in predictions[1]["error"]
    assert http(port, f"GET /health HTTP/1.1\nHost: localhost:{port}\nConnection: close\n")[0] == 200

    good = json.dumps({"dataframe_records": rows[:1]}).encode()
    rebinding = f"POST /invocations HTTP/1.1\nHost: evil.example:{port}\nConnection: close\n"
    rebinding += f"Content-Type: application/json\nContent-Length: {len(good)}\n"
    assert http(port, rebinding, good)[0] == 403
    assert post(port, good, extra="Origin: http://evil.example\n")[0] == 403
    assert post(port, good, content_type=None)[0] == 415
    deep = b"[" * 1000 + b"]" * 1000
    assert post(port, deep)[0] == 400

    pids = tree_of(proc.pid)
    before = rss_mb(pids)
    assert huge_body(port, 210, declare_length=True) == 413
    assert huge_body(port, 210, declare_length=False) == 413
    grown = rss_mb(pids) - before
    assert grown < 100, f"the server grew by {grown:.0f} MB on refused 210 MB bodies"
    assert post(port, good)[0] == 200  # still serving


@pytest.mark.slow
def test_slow_header_clients_do_not_deny_dermsweep_serve(server):
    """More clients than serve's connection cap each trickle one header line at a time: /ping and a prediction
    are still answered (the guard pushes out the stalled heads), where uvicorn alone answered 503 to everyone
    until the tricklers stopped."""
    from dermsweep.shipping.rest_server import MAX_CONNECTIONS

    _, port, _ = server
    slow = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(MAX_CONNECTIONS + 6)]
    try:
        for i in range(3):  # their heads are under way and never finish
            for s in slow:
                try:
                    s.sendall(
                        f"GET /ping HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode() if i == 0 else b"X-Slow: 1\r\n"
                    )
                except OSError:
                    pass  # already pushed out
            time.sleep(0.3)
        assert http(port, f"GET /ping HTTP/1.1\nHost: 127.0.0.1:{port}\nConnection: close\n", timeout=20)[0] == 200
        good = json.dumps({"dataframe_records": [{"image": png_b64()}]}).encode()
        assert post(port, good)[0] == 200
    finally:
        for s in slow:
            s.close()


@pytest.mark.slow
def test_sigterm_stops_every_process_and_closes_the_port(server):  # last: it ends the module's server
    proc, port, log_path = server
    pids = tree_of(proc.pid)
    os.kill(proc.pid, signal.SIGTERM)
    code = proc.wait(timeout=60)
    deadline = time.monotonic() + 10
    while any(alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if alive(p)], "processes started by dermsweep serve outlived it"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert code == 0, log_path.read_text()[-2000:]  # a graceful stop, not death by the signal
