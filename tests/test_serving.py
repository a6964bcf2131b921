"""dermsweep.serving: the registered @champion answers base64 images with probabilities and labels."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from dermsweep.data.images import BadImage
from dermsweep.data.sources.ham10000 import FULL_NAMES
from dermsweep.shipping.serving import decode_payload
from helpers.servers import free_port
from helpers.shipping import CLASSES, champion_of, ham_images


def png_b64(seed: int = 0, size=(40, 30)) -> str:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def images_b64() -> list[str]:
    real = [base64.b64encode(p.read_bytes()).decode() for p in ham_images(2)]
    return real or [png_b64(0), png_b64(1)]


def test_decode_payload_forms():
    raw = base64.b64decode(png_b64())
    assert decode_payload(png_b64()) == raw
    assert decode_payload("data:image/png;base64," + png_b64()) == raw
    assert decode_payload(raw) == raw
    with pytest.raises(BadImage, match="base64"):
        decode_payload("%%% not base64")
    with pytest.raises(BadImage, match="expected base64"):
        decode_payload(12)


def test_pyfunc_champion_predicts_labels_and_probabilities(store):
    import mlflow

    uri = champion_of(store, "serving-test")
    model = mlflow.pyfunc.load_model(uri)
    good = images_b64()
    out = model.predict(pd.DataFrame({"image": good + ["not base64 at all!", base64.b64encode(b"hello").decode()]}))
    assert list(out.columns) == ["label", "name", "probability", "probabilities", "operating_point", "error"]
    for _, row in out.iloc[: len(good)].iterrows():
        assert row["error"] is None and row["label"] in CLASSES
        assert sum(row["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert row["probability"] == pytest.approx(max(row["probabilities"].values()))
        assert row["name"]  # full diagnosis name
    assert "base64" in out.iloc[len(good)]["error"] and out.iloc[len(good)]["label"] is None
    assert "not an image" in out.iloc[len(good) + 1]["error"]
    # the same pixels through the Keras model give the same probabilities (training preprocessing)
    from dermsweep.data.images import load_rgb
    from dermsweep.tracking.model_ref import load

    keras_model, ref = load(uri)
    x = load_rgb(base64.b64decode(good[0]), *ref.input_size)[None].astype(np.float32)
    expected = np.asarray(keras_model.predict_on_batch(x))[0]
    got = np.array([out.iloc[0]["probabilities"][c] for c in CLASSES])
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_serving_model_travels_without_dermsweep(store, tmp_path):
    """serving.py runs with only numpy/PIL/keras/mlflow: images.py and diagnoses.py come along as code paths, and
    the full diagnosis names come from the model's metadata (no copy of the class table travels)."""
    import mlflow

    uri = champion_of(store, "serving-test")
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "m")))
    assert (local / "code" / "images.py").is_file() and (local / "code" / "diagnoses.py").is_file()
    script = (
        "import sys, builtins, json, base64\n"
        "real = builtins.__import__\n"
        "def guard(name, *a, **k):\n"
        "    if name == 'dermsweep' or name.startswith('dermsweep.'):\n"
        "        raise ImportError('dermsweep hidden')\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = guard\n"
        "import mlflow, pandas as pd\n"
        f"m = mlflow.pyfunc.load_model({str(local)!r})\n"
        f"out = m.predict(pd.DataFrame({{'image': [{png_b64()!r}]}}))\n"
        "print(json.dumps(out.to_dict('records')))\n"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    res = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path
    )
    assert res.returncode == 0, res.stderr[-2000:]
    rows = json.loads(res.stdout.strip().splitlines()[-1])
    assert rows[0]["label"] in CLASSES and rows[0]["error"] is None
    assert rows[0]["name"] == FULL_NAMES[rows[0]["label"]] and rows[0]["name"] != rows[0]["label"]


@pytest.mark.slow
def test_mlflow_models_serve_answers_base64_images(store, tmp_path):
    uri = champion_of(store, "serving-test")
    port = free_port()
    mlflow_bin = str(Path(sys.executable).with_name("mlflow"))
    # mlflow execs `uvicorn` from PATH: the venv's bin must be on it
    path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
    env = dict(os.environ, MLFLOW_TRACKING_URI=store.uri, TF_CPP_MIN_LOG_LEVEL="3", PATH=path)
    log = open(tmp_path / "serve.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(
        [
            mlflow_bin,
            "models",
            "serve",
            "-m",
            uri,
            "--env-manager",
            "local",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "server did not come up in 120 s"
            time.sleep(1)
        body = json.dumps({"dataframe_records": [{"image": b} for b in images_b64()] + [{"image": "@@@"}]})
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations", data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            preds = json.loads(r.read())["predictions"]
        assert [p["label"] in CLASSES for p in preds[:-1]] == [True] * (len(preds) - 1)
        assert all(abs(sum(p["probabilities"].values()) - 1) < 1e-4 for p in preds[:-1])
        assert preds[-1]["label"] is None and "base64" in preds[-1]["error"]
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=15)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        log.close()
