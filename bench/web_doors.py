"""Load test of `dermsweep web`, by hand, on loopback only; it stops by itself.

Starts the web server in its own process (a pretrained MobileNet v1 a=0.25 with a seeded head at 96x128 from
../shared/weights, or --model URI), then:
1. load: --requests POSTs of a HAM10000 photo to /api/predict, --concurrency at a time; every 10th is a file that is
   not an image (must be a 400); anything else is an error. Latency p50/p95 of the 200s; the server's RSS after a
   warm-up and at the end.
2. slow headers: --slow clients each send one header line every --trickle seconds for --slow-seconds (reconnecting
   when cut off); meanwhile one normal client asks /api/info and POSTs a photo in turn. Its statuses and latency.

    .venv/bin/python bench/web_doors.py                      # the defaults (about 2 minutes on a loaded machine)
    .venv/bin/python bench/web_doors.py --src /tmp/main/src  # the same against another checkout's server
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from _common import DEFAULT_WEIGHTS, ROOT, load, parser, save
from _slow_heads import percentiles, slow_headers

SERVER = textwrap.dedent(
    """
    import json, sys, tempfile
    from pathlib import Path
    uri, weights = sys.argv[1], sys.argv[2]
    if uri == "-":  # a small real model: pretrained backbone, seeded head
        import keras
        from omegaconf import OmegaConf
        from dermsweep.training.model import build
        keras.utils.set_random_seed(0)
        cfg = OmegaConf.create({"name": "mobilenet_v1", "height": 96, "width": 128, "alpha": 0.25,
                                "weights": weights, "dropout": 0.0})
        folder = Path(tempfile.mkdtemp(prefix="dermsweep-bench-web-"))
        build(cfg, 7).save(folder / "model.keras")
        (folder / "model_info.json").write_text(json.dumps({"class_names": ["akiec", "bcc", "bkl", "df", "mel",
            "nv", "vasc"], "input_height": 96, "input_width": 128}))
        uri = str(folder / "model.keras")
    from dermsweep.web.server import serve
    sys.exit(serve(uri, install=False, port=0, ready=lambda url: print("URL", url, flush=True), say=lambda m: None))
    """
)


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def post(port: int, path: str, body: bytes) -> tuple[int, float]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("POST", path, body, {"Content-Type": "application/octet-stream"})
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - t
    except OSError:
        return -1, time.perf_counter() - t
    finally:
        conn.close()


def get(port: int, path: str) -> tuple[int, float]:
    t = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - t
    except OSError:
        return -1, time.perf_counter() - t
    finally:
        conn.close()


def load_test(port: int, pid: int, photo: bytes, requests: int, concurrency: int) -> dict:
    for _ in range(5):  # warm up: the model's first calls, the allocator's first pools
        post(port, "/api/predict", photo)
    before = rss_mb(pid)
    latencies: list[float] = []
    counts = {"ok": 0, "refused_as_expected": 0, "errors": 0}
    lock = threading.Lock()
    queue = list(range(requests))

    def client() -> None:
        while True:
            with lock:
                if not queue:
                    return
                i = queue.pop()
            bad = i % 10 == 0
            status, dt = post(port, "/api/predict", b"this is not an image\n" if bad else photo)
            with lock:
                if bad and status == 400:
                    counts["refused_as_expected"] += 1
                elif not bad and status == 200:
                    counts["ok"] += 1
                    latencies.append(dt)
                else:
                    counts["errors"] += 1

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    return {
        "requests": requests,
        "concurrency": concurrency,
        **counts,
        **percentiles(latencies),
        "requests_per_s": round(requests / wall, 1),
        "rss_before_mb": round(before),
        "rss_after_mb": round(rss_mb(pid)),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="-", help="model URI to serve (default: a small pretrained model, built here)")
    p.add_argument("--weights", default=DEFAULT_WEIGHTS)
    p.add_argument("--src", default=str(ROOT / "src"), help="the dermsweep source to run the server from")
    p.add_argument("--requests", type=int, default=200)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--slow", type=int, default=16)
    p.add_argument("--trickle", type=float, default=5.0, help="seconds between a slow client's header lines")
    p.add_argument("--slow-seconds", type=float, default=30.0)
    args = p.parse_args()
    photo = sorted((Path(args.data) / "HAM10000_images_part_1").glob("*.jpg"))[0].read_bytes()
    env = dict(os.environ, PYTHONPATH=args.src, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, args.model, args.weights],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,  # the access log
        env=env,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("URL "):
            raise SystemExit(f"the server did not start (exit {proc.wait()})")
        port = int(line.split()[1].rstrip("/").rsplit(":", 1)[1])
        result = {
            "src": args.src,
            "load_before": load(),
            "load_test": load_test(port, proc.pid, photo, args.requests, args.concurrency),
            "slow_headers": slow_headers(
                port,
                lambda i: get(port, "/api/info") if i % 2 == 0 else post(port, "/api/predict", photo),
                args.slow,
                args.trickle,
                args.slow_seconds,
                "/api/info",
            ),
            "load_after": load(),
        }
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
    for section in ("load_test", "slow_headers"):
        print(section, result[section])
    save("web_doors", result, args.out)


if __name__ == "__main__":
    main()
