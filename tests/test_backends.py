"""Training on every Keras backend: the rules that pick the backend, precision and parallelism, and real smoke runs
on JAX (two devices, data parallel, mixed bfloat16) and PyTorch, each in its own process with TensorFlow made
unimportable (tests/helpers/backend_runner.py), whose models then load here, under TensorFlow.

The JAX sweep, promotion and export are tests/test_jax_sweep.py. A backend that is not installed is skipped, saying
so; `make install` installs both.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from omegaconf import OmegaConf

from dermsweep.errors import ConfigError
from dermsweep.keras_backend import select
from dermsweep.tracking import run_format as rf
from dermsweep.training import hardware
from dermsweep.training.devices import Devices
from helpers.backends import RUNNER, backend_env, needs
from helpers.config import REPO, SMALLEST

TINY = [
    *SMALLEST,
    "model.height=32",
    "model.width=32",
    "tracking.log_model=always",
]


def train(ws: Path, backend: str, *overrides: str, env: dict | None = None, timeout: int = 900) -> str:
    """One run of train.py on `backend` without TensorFlow; returns its run id."""
    uri = f"sqlite:///{ws}/mlflow.db"
    proc = subprocess.run(
        [sys.executable, RUNNER, *TINY, f"hardware.backend={backend}", f"tracking.uri={uri}", f"cache_dir={ws}/cache"]
        + [f"hydra.run.dir={ws}/outputs", *overrides],
        cwd=ws,
        env=env or backend_env(backend),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    client = mlflow.MlflowClient(uri)
    (run,) = [r for e in client.search_experiments() for r in client.search_runs([e.experiment_id])]
    return run.info.run_id


def check_run(ws: Path, run_id: str, backend: str) -> mlflow.entities.Run:
    """Finished, tracked like any run, with its backend recorded, and a model that loads and predicts here (on
    TensorFlow, where export runs)."""
    from dermsweep.tracking.model_ref import load

    uri = f"sqlite:///{ws}/mlflow.db"
    client = mlflow.MlflowClient(uri)
    r = client.get_run(run_id)
    assert r.info.status == "FINISHED" and r.data.tags[rf.STATUS] == "finished"
    assert r.data.tags[rf.BACKEND] == backend == r.data.params["hardware.backend"]
    m = r.data.metrics
    assert all(np.isfinite(m[rf.metric(rf.FINAL_VAL, k)]) for k in ("balanced_accuracy", "loss", "macro_auc"))
    for speed in (rf.epoch_metric("epoch_seconds"), rf.epoch_metric("val_seconds")):
        assert [h.step for h in client.get_metric_history(run_id, speed)] == [1, 2]
    mlflow.set_tracking_uri(uri)
    info = mlflow.models.get_model_info(f"runs:/{run_id}/model")
    assert info.flavors["keras"]["keras_backend"] == backend
    model, ref = load(run_id, client)
    x = np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    probs = np.asarray(model(x, training=False))
    assert probs.shape == (3, 7) and np.allclose(probs.sum(axis=1), 1, atol=1e-3)
    assert ref.class_names == ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    return r


def test_the_backend_is_chosen_once_per_process():
    select("tensorflow")  # this process runs Keras on TensorFlow: checked, nothing changes
    with pytest.raises(ConfigError, match=r"hardware.backend=jax: this process already runs Keras on tensorflow"):
        select("jax")
    with pytest.raises(ConfigError, match="hardware.backend='mxnet': unknown; choose one of tensorflow, jax, torch"):
        select("mxnet")


def test_config_validation_imports_no_backend():
    """The sweep's pre-flight validates configs before the first job has chosen the backend: no keras yet."""
    frameworks = "{'keras', 'tensorflow', 'jax', 'torch'}"
    code = f"import sys, dermsweep.training.config; print(sorted({frameworks} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert out.stdout.strip() == "[]"


def _hw(**over):
    return OmegaConf.create({"mixed_precision": "auto", "mixed_dtype": "auto", "multi_gpu": "auto", **over})


@pytest.mark.parametrize(
    "devices,over,policy",
    [
        (Devices("cpu", ("cpu",)), {}, "float32"),  # off on a CPU unless asked
        (Devices("cpu", ("cpu",)), {"mixed_precision": "true"}, "mixed_bfloat16"),
        (Devices("gpu", ("NVIDIA H100",), bfloat16=True), {}, "mixed_bfloat16"),
        (Devices("gpu", ("Tesla T4",), bfloat16=False), {}, "mixed_float16"),  # no native bfloat16: float16
        (Devices("gpu", ("NVIDIA H100",), bfloat16=True), {"mixed_dtype": "float16"}, "mixed_float16"),
        (Devices("tpu", ("TPU v4",) * 4, bfloat16=True), {"mixed_precision": "false"}, "float32"),
    ],
)
def test_mixed_precision_policy(devices, over, policy):
    assert hardware._policy(_hw(**over), devices) == policy


def test_data_parallelism_only_where_the_backend_has_it():
    two = Devices("gpu", ("A100", "A100"), bfloat16=True)
    assert hardware._parallel("torch", "auto", two)[0] == 1  # auto: one device, said in the log
    with pytest.raises(ConfigError, match="hardware.multi_gpu=true: data parallelism runs on tensorflow and jax"):
        hardware._parallel("torch", "true", two)
    assert hardware._parallel("tensorflow", "auto", Devices("cpu", ("cpu",)))[0] == 1


def test_models_of_both_flavours_load(tmp_path, monkeypatch):
    """Runs log the Keras 3 flavour now; models logged before with the TensorFlow flavour still resolve and load."""
    import keras

    from dermsweep.tracking.model_log import log_keras_model
    from dermsweep.tracking.model_ref import load

    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("flavours")  # not an experiment id another test in this process made active elsewhere
    inputs = keras.Input((8, 8, 3), name="image")
    model = keras.Model(inputs, keras.layers.Dense(7, activation="softmax")(keras.layers.Flatten()(inputs)))
    x = np.ones((2, 8, 8, 3), np.float32)
    info = {"class_names": list("abcdefg"), "input_height": 8, "input_width": 8}
    with mlflow.start_run() as new:
        log_keras_model(model, x[:1], info)
    with mlflow.start_run() as old:
        mlflow.tensorflow.log_model(model, name=rf.MODEL, metadata=info, pip_requirements=["keras"])
    try:
        for run, flavour in ((new, "keras"), (old, "tensorflow")):
            assert flavour in mlflow.models.get_model_info(f"runs:/{run.info.run_id}/model").flavors
            loaded, ref = load(run.info.run_id, mlflow.MlflowClient(uri))
            assert ref.class_names == list("abcdefg")
            assert np.allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-6)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow
@needs("jax")
def test_jax_run_data_parallel_in_mixed_bfloat16(tmp_path):
    """Both phases on JAX over two (virtual CPU) devices with keras.distribution, in mixed bfloat16."""
    env = backend_env("jax", XLA_FLAGS="--xla_force_host_platform_device_count=2")
    # the compiled (jit) step, as on an accelerator: the smoke trainer's eager steps would test something else
    run_id = train(tmp_path, "jax", "hardware.mixed_precision=true", "trainer.run_eagerly=false", env=env)
    p = check_run(tmp_path, run_id, "jax").data.params
    assert p["hardware.replicas"] == "2" and p["hardware.dtype_policy"] == "mixed_bfloat16"
    assert p["hardware.jax"] and p["hardware.accelerator"] == "cpu"


@pytest.mark.slow
@needs("torch")
def test_torch_run(tmp_path):
    run_id = train(tmp_path, "torch")
    p = check_run(tmp_path, run_id, "torch").data.params
    assert p["hardware.replicas"] == "1" and p["hardware.dtype_policy"] == "float32" and p["hardware.torch"]
