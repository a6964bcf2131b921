"""The slow-header case shared by the web and serve load tests: `slow` clients each send one header line every
`trickle` seconds (reconnecting when cut off), while one normal client keeps asking. What the normal client got
(statuses, latency of its 200s) says whether a few trickling sockets can deny the service to everyone."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import numpy as np


def percentiles(seconds: list[float]) -> dict:
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "max_ms": None}
    ms = np.array(seconds) * 1000
    return {
        k: round(float(v), 1)
        for k, v in zip(("p50_ms", "p95_ms", "max_ms"), (*np.percentile(ms, [50, 95]), ms.max()), strict=True)
    }


def slow_headers(
    port: int, normal: Callable[[int], tuple[int, float]], slow: int, trickle: float, seconds: float, path: str
) -> dict:
    """`normal(i)` makes the i-th normal request and returns (HTTP status or -1, seconds); the slow clients trickle
    the head of a GET of `path`."""
    stop = time.monotonic() + seconds
    cut = {"cut_off": 0}
    lock = threading.Lock()

    def slow_client(k: int) -> None:
        while time.monotonic() < stop:
            try:
                s = socket.create_connection(("127.0.0.1", port), timeout=trickle + 5)
                s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
                i = 0
                while time.monotonic() < stop:
                    time.sleep(trickle)
                    s.sendall(f"X-Slow-{k}-{i}: 1\r\n".encode())
                    i += 1
                s.close()
            except OSError:  # cut off by the server: note how, then come back (keep up the pressure)
                with lock:
                    cut["cut_off"] += 1
                time.sleep(0.1)

    threads = [threading.Thread(target=slow_client, args=(k,), daemon=True) for k in range(slow)]
    for t in threads:
        t.start()
    time.sleep(min(2.0, seconds / 4))  # the slow heads are under way
    statuses: dict[str, int] = {}
    latencies: list[float] = []
    i = 0
    while time.monotonic() < stop:
        status, dt = normal(i)
        statuses[str(status)] = statuses.get(str(status), 0) + 1
        if status == 200:
            latencies.append(dt)
        i += 1
        time.sleep(0.25)
    for t in threads:
        t.join(trickle + 10)
    return {
        "slow_clients": slow,
        "trickle_s": trickle,
        "seconds": seconds,
        "normal_requests": i,
        "normal_statuses": statuses,
        **{f"normal_{k}": v for k, v in percentiles(latencies).items()},
        "slow_connections_cut_off": cut["cut_off"],
    }
