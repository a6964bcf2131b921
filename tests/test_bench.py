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
RUNS = [name for name in SCRIPTS if name != "run_all"]  # run_all only starts the others
# Extra arguments that keep a tiny run short while still taking every code path (one backbone per family).
TINY_ARGS = {"starvation": ["--model", "mobilenet_v1_a025,mobilenet_v2_a035"]}
# What each result must hold besides `targets` (what run_all's summary reads).
RESULT_KEYS = {
    "pipeline": ["results"],
    "starvation": ["results"],
    "sweep_efficiency": ["runs", "figure"],
    "trial_overhead": ["trials"],
    "inference": ["results"],
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
@pytest.mark.parametrize("name", RUNS)
def test_script_runs_tiny(name, tmp_path):
    out = tmp_path / f"{name}.json"
    env = dict(os.environ, DERMSWEEP_BENCH_TINY="1", TMPDIR=str(tmp_path))
    env.pop("MLFLOW_TRACKING_URI", None)  # the benchmarks use their own temp stores
    cmd = [sys.executable, str(BENCH / f"{name}.py"), "--out", str(out), *TINY_ARGS.get(name, [])]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
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
