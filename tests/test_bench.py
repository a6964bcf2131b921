"""Every script in bench/ still runs: each is imported, then run in its own process in --tiny mode (seconds of work
on synthetic HAM10000-layout images with random weights, no download, no GPU) and must write its JSON result.

A benchmark that patches or imports a name the product moved fails here, not in the next `make bench`."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))
# run_all only starts the others; serve_doors and web_doors are load tests run by hand (tests/test_serve_doors.py and
# tests/test_web_doors.py hold their behaviour)
RUNS = [name for name in SCRIPTS if name not in ("run_all", "serve_doors", "web_doors")]
# A minute or more each even at --tiny (training processes, every export format): run by `make test-bench`, not in
# every `make test` (whose time CI keeps under 20 minutes); the light ones stay in it.
HEAVY = {"sweep_efficiency", "starvation", "trial_overhead", "inference", "determinism", "cpu_limit"}
# Extra arguments that keep a tiny run short while still taking every code path (one backbone per family).
TINY_ARGS = {"starvation": ["--model", "mobilenet_v1_a025,mobilenet_v2_a035"]}
# What each result must hold besides `targets` (what run_all's summary reads).
RESULT_KEYS = {
    "pipeline": ["results"],
    "starvation": ["results"],
    "sweep_efficiency": ["runs", "figure"],
    "trial_overhead": ["trials"],
    "inference": ["results"],
    "determinism": ["seconds_per_step", "cost"],
    "cpu_limit": ["results", "forward_gflop_per_image", "peak"],
}


@pytest.fixture(scope="module", autouse=True)
def bench_on_path():
    sys.path.insert(0, str(BENCH))
    yield
    sys.path.remove(str(BENCH))


def test_run_all_knows_every_script():
    run_all = importlib.import_module("run_all")
    assert sorted(run_all.SCRIPTS) == RUNS, "add the new script to bench/run_all.py's SCRIPTS (and RESULT_KEYS here)"
    assert sorted(RESULT_KEYS) == RUNS


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_imports(name):
    module = importlib.import_module(name)
    assert callable(module.main)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name", [pytest.param(name, marks=pytest.mark.bench) if name in HEAVY else name for name in RUNS]
)
def test_script_runs_tiny(name, tmp_path):
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, DERMSWEEP_BENCH_TINY="1", TMPDIR=str(tmp_path))
    env.pop("MLFLOW_TRACKING_URI", None)  # the benchmarks use their own temp stores
    cmd = [sys.executable, str(BENCH / f"{name}.py"), "--out", str(out), *TINY_ARGS.get(name, [])]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, f"{name} --tiny failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "--tiny: synthetic images" in proc.stdout
    result = json.loads(out.read_text())
    assert result["settings"]["tiny"] is True and "targets" in result
    for key in RESULT_KEYS[name]:
        assert result[key], f"{name}: empty {key!r} in its result"
    if name == "sweep_efficiency":
        assert Path(result["figure"]).is_file() and Path(result["figure"]).stat().st_size > 0
        assert [r["name"] for r in result["runs"]] == ["unpruned", "pruned-sha", "pruned-hyperband"]
        assert all("error" not in r for r in result["runs"])
    if name == "starvation":
        assert {r["model"] for r in result["results"]} == {"mobilenet_v1_a025", "mobilenet_v2_a035"}
    if name == "inference":
        formats = {r["format"] for r in result["results"]}
        assert {"tflite_f32", "tflite_f16", "tflite_int8"} <= formats, result.get("notes")


def test_gpu_check_script_parses_and_explains_itself():
    """bench/gpu_check.sh runs only on a leased GPU machine: here its syntax and its help are checked."""
    script = BENCH / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    shown = subprocess.run(["bash", str(script), "--help"], capture_output=True, text=True)
    assert shown.returncode == 0 and "gpu_check.sh pack" in shown.stdout and "gpu_check.sh run" in shown.stdout


def test_time_to_quality_curve_counts_completed_trials_in_completion_order():
    import datetime as dt
    from types import SimpleNamespace

    import optuna

    sweep_efficiency = importlib.import_module("sweep_efficiency")
    start = dt.datetime(2026, 12, 4, 12, 0, 0)
    state = optuna.trial.TrialState

    def trial(seconds, value, s=state.COMPLETE):
        return SimpleNamespace(state=s, value=value, datetime_complete=start + dt.timedelta(seconds=seconds))

    trials = [trial(30, 0.5), trial(10, 0.4), trial(20, None, state.PRUNED), trial(40, 0.45), trial(50, 0.62)]
    points = sweep_efficiency.curve(trials, start)
    assert points == [(10.0, 0.4), (30.0, 0.5), (40.0, 0.5), (50.0, 0.62)]
    assert sweep_efficiency.time_to_reach(points, 0.95 * 0.52) == 30.0
    assert sweep_efficiency.time_to_reach(points, 0.7) is None


def test_time_to_quality_figure_draws_every_sweep(tmp_path):
    sweep_efficiency = importlib.import_module("sweep_efficiency")
    runs = [
        {"name": "unpruned", "curve": [(60.0, 0.5), (180.0, 0.6)], "wall_s": 200.0, "complete": 2, "pruned": 0},
        {"name": "pruned-sha", "curve": [(40.0, 0.55)], "wall_s": 90.0, "complete": 1, "pruned": 1},
        {"name": "pruned-hyperband", "curve": [], "wall_s": 30.0, "complete": 0, "pruned": 2},  # nothing finished
    ]
    path = sweep_efficiency.plot(runs, 0.57, tmp_path / "figure" / "sweep_efficiency.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_trial_overhead_meter_counts_outer_calls_on_the_trial_thread_only(monkeypatch):
    import threading
    import types

    trial_overhead = importlib.import_module("trial_overhead")
    meter = trial_overhead.Meter()
    inner = meter.wrap(lambda: None, "mlflow")
    outer = meter.wrap(lambda: inner(), "model_logging")
    outer()
    assert set(meter.totals) == {"model_logging"}  # the nested call is not counted twice
    other = threading.Thread(target=meter.wrap(lambda: None, "figures"))
    other.start()
    other.join()
    assert "figures" not in meter.totals  # the figure thread overlaps the trial: not its time

    def seam():
        return "original"

    probe = types.ModuleType("dermsweep._bench_probe")
    probe.seam = seam
    monkeypatch.setitem(sys.modules, probe.__name__, probe)
    assert trial_overhead.rebind(seam, lambda: "wrapped") == 1 and probe.seam() == "wrapped"
