"""Serve load test: `dermsweep serve` on loopback under normal load and under refused 210 MB bodies, then SIGTERM.

A throwaway tracking store gets the tests' tiny champion (tests/helpers/shipping.py: the latency is the server's
and the decode's, not a MobileNet's), `dermsweep serve` starts on a free 127.0.0.1 port, and then:
1. --requests POSTs of one real HAM10000 image each from --clients threads: errors, p50/p95 latency;
2. slow headers: --slow clients each send one header line every --trickle seconds for --slow-seconds (reconnecting
   when cut off) while one normal client asks /ping and POSTs an image in turn: its statuses and latency;
3. --attacks bodies of 210 MB at once (half with a declared Content-Length, half chunked): their answers;
4. the server's memory (RSS of its process tree) before 1, after 1 and after 3;
5. SIGTERM: seconds to exit, processes of its tree still alive, whether the port still answers.

    python bench/serve_doors.py [--requests 200] [--clients 4] [--slow 16] [--attacks 4]
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common as C
from _slow_heads import slow_headers

sys.path.insert(0, str(C.ROOT / "tests"))  # the tests' helpers package: import helpers.*


class _Temp:
    """What the tests' store builder needs of pytest's tmp_path_factory (folders removed at the end)."""

    made: list[Path] = []

    def mktemp(self, name: str) -> Path:
        self.made.append(Path(tempfile.mkdtemp(prefix=f"bench-{name}-")))
        return self.made[-1]


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--slow", type=int, default=16)
    p.add_argument("--trickle", type=float, default=5.0, help="seconds between a slow client's header lines")
    p.add_argument("--slow-seconds", type=float, default=30.0)
    p.add_argument("--attacks", type=int, default=4)
    args = p.parse_args(argv)

    import pytest

    from helpers.servers import free_port, http, huge_body, post, rss_mb, tree_of
    from helpers.shipping import activate, champion_of, ham_images, shared_store

    load_before = C.load()
    store = shared_store(_Temp())
    with pytest.MonkeyPatch.context() as mp:
        activate(store, mp)
        uri = champion_of(store, "bench-serve")
    port = free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=store.uri, TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [str(Path(sys.executable).with_name("dermsweep")), "serve", "--model", uri, "--port", str(port)]
    log = tempfile.NamedTemporaryFile("w", suffix=".log", delete=False)  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        start = time.monotonic()
        while not _pings(port):
            assert proc.poll() is None, Path(log.name).read_text()[-2000:]
            assert time.monotonic() - start < 300, "server did not start in 300 s"
            time.sleep(1)
        startup_s = time.monotonic() - start
        images = ham_images(20) or []
        bodies = [
            json.dumps({"dataframe_records": [{"image": base64.b64encode(i.read_bytes()).decode()}]}).encode()
            for i in images
        ]
        pids = tree_of(proc.pid)
        rss = {"before": rss_mb(pids)}
        latencies, errors = [], []
        lock = threading.Lock()
        counter = iter(range(args.requests))

        def client() -> None:
            for n in counter:
                t = time.perf_counter()
                try:
                    status, body = post(port, bodies[n % len(bodies)])
                    ok = status == 200 and json.loads(body)["predictions"][0]["error"] is None
                except (OSError, ValueError, KeyError) as exc:
                    ok, status = False, repr(exc)
                with lock:
                    latencies.append((time.perf_counter() - t) * 1000)
                    if not ok:
                        errors.append(status)

        load_during = C.load()
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(args.clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        rss["after_load"] = rss_mb(pids)

        def normal(i: int) -> tuple[int, float]:
            t = time.perf_counter()
            try:
                if i % 2 == 0:
                    status, _ = http(port, f"GET /ping HTTP/1.1\nHost: 127.0.0.1:{port}\nConnection: close\n")
                else:
                    status, _ = post(port, bodies[i % len(bodies)])
            except OSError:
                status = -1
            return status, time.perf_counter() - t

        slow = slow_headers(port, normal, args.slow, args.trickle, args.slow_seconds, "/ping")
        answers: list = [None] * args.attacks

        def attack(i: int) -> None:
            try:
                answers[i] = huge_body(port, 210, declare_length=i % 2 == 0)
            except OSError as exc:
                answers[i] = repr(exc)

        attackers = [threading.Thread(target=attack, args=(i,)) for i in range(args.attacks)]
        for t in attackers:
            t.start()
        for t in attackers:
            t.join()
        rss["after_attacks"] = rss_mb(pids)
        t = time.monotonic()
        os.kill(proc.pid, signal.SIGTERM)
        code = proc.wait(timeout=60)
        stop_s = time.monotonic() - t
        time.sleep(1)
        left = [p for p in pids if Path(f"/proc/{p}").exists()]
        result = {
            "requests": args.requests,
            "clients": args.clients,
            "errors": len(errors),
            "error_examples": errors[:3],
            "p50_ms": round(statistics.median(latencies), 1),
            "p95_ms": round(statistics.quantiles(latencies, n=20)[-1], 1),
            "requests_per_s": round(args.requests / wall, 2),
            "rss_mb": {k: round(v, 1) for k, v in rss.items()},
            "slow_headers": slow,
            "attacks_210mb": answers,
            "startup_s": round(startup_s, 1),
            "sigterm": {"exit_code": code, "seconds": round(stop_s, 2), "processes_left": left},
            "port_open_after": _listening(port),
            "load": {"before": load_before, "during": load_during, "after": C.load()},
            "machine": C.machine(),
        }
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
        Path(log.name).unlink()
        for folder in _Temp.made:
            shutil.rmtree(folder, ignore_errors=True)
    print(json.dumps(result, indent=2))
    out = Path(args.out) if args.out else C.RESULTS / "serve_doors.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


def _pings(port: int) -> bool:
    from helpers.servers import http

    try:
        return http(port, f"GET /ping HTTP/1.1\nHost: 127.0.0.1:{port}\nConnection: close\n", timeout=5)[0] == 200
    except OSError:
        return False


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
