"""Run every benchmark with its default sizes (each in its own process), then print one summary of the targets.

    python bench/run_all.py [--only pipeline,starvation] [--data PATH] [--summary-only] [--tiny]
    make bench ARGS="--only inference"

Each script writes bench/results/<name>.json; the summary reads those files, so MET / NOT MET always comes from
the numbers just measured (a script that failed shows as such, never with an old result).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import _common as C

SCRIPTS = ["pipeline", "starvation", "sweep_efficiency", "trial_overhead", "inference", "determinism", "cpu_limit"]


def summary(names: list[str], started: dict[str, float], status: dict[str, str], results=C.RESULTS) -> list[dict]:
    rows, all_targets = [], []
    for name in names:
        path = results / f"{name}.json"
        result = json.loads(path.read_text()) if path.is_file() else None
        fresh = result is not None and path.stat().st_mtime >= started.get(name, 0)
        if not fresh:
            rows.append([name, "(no result: " + status.get(name, "not run") + ")", "", "", ""])
            continue
        for t in result.get("targets", []):
            all_targets.append({"benchmark": name, **t})
            rows.append(
                [name, t["name"], t["target"], f"{t['measured']:.3g}{t['unit']}", "MET" if t["met"] else "NOT MET"]
            )
        if name == "inference":
            for r in result["results"]:
                rows.append(
                    [
                        name,
                        f"{r['format']}: {r['size_bytes'] / 1e6:.2f} MB",
                        "(figures only)",
                        f"{r['latency_ms']:.2f} ms",
                        "",
                    ]
                )
    print(C.table(rows, ["benchmark", "target / figure", "goal", "measured", "status"]))
    return all_targets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=",".join(SCRIPTS), help="comma-separated subset of " + ",".join(SCRIPTS))
    p.add_argument("--data", default=None, help="HAM10000 root passed to every script")
    p.add_argument("--summary-only", action="store_true", help="print the summary of the existing results")
    p.add_argument(
        "--tiny",
        action="store_true",
        default=os.environ.get(C.TINY_ENV, "0") not in ("", "0"),
        help="every script in its smoke mode (seconds, synthetic data): checks they run; results in bench/results/tiny",
    )
    args = p.parse_args()
    results = C.TINY_RESULTS if args.tiny else C.RESULTS
    env = dict(os.environ, **({C.TINY_ENV: "1"} if args.tiny else {}))
    names = [n for n in args.only.split(",") if n]
    unknown = [n for n in names if n not in SCRIPTS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {unknown}; choose from {SCRIPTS}")
    load_start = C.load()
    print(f"machine: {C.machine()}\nload at start: {load_start}", flush=True)
    started, status, seconds = {}, {}, {}
    t_all = time.perf_counter()
    for name in names if not args.summary_only else []:
        cmd = [sys.executable, str(C.ROOT / "bench" / f"{name}.py")] + (["--data", args.data] if args.data else [])
        print(f"\n===== {name}: {' '.join(cmd[1:])}  (load {C.load()['loadavg_1m']})", flush=True)
        started[name] = time.time()
        t = time.perf_counter()
        rc = subprocess.run(cmd, cwd=C.ROOT, env=env).returncode
        seconds[name] = time.perf_counter() - t
        status[name] = "ok" if rc == 0 else f"failed, exit {rc}"
        print(f"===== {name}: {status[name]} in {seconds[name]:.0f}s", flush=True)
    load_end = C.load()
    print(f"\n===== summary (total {time.perf_counter() - t_all:.0f}s; load start {load_start}, end {load_end})")
    targets = summary(names, started if not args.summary_only else {}, status, results)
    results.mkdir(parents=True, exist_ok=True)
    (results / "summary.json").write_text(
        json.dumps(
            {
                "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": C.machine(),
                "load_start": load_start,
                "load_end": load_end,
                "seconds": seconds,
                "status": status,
                "targets": targets,
            },
            indent=2,
            default=float,
        )
    )
    if any(s != "ok" for s in status.values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
