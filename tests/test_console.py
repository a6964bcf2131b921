"""What a training run prints: one bare line per epoch (epoch n/N, phase, loss, the objective, lr, seconds) and
nothing from TensorFlow's C++ start-up, MLflow's log lines or Python warnings, unless -v / verbose=true."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import pytest

from dermsweep.quiet import ConsoleFormatter
from dermsweep.training import progress

REPO_TRAIN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "train.py")
EPOCH = re.compile(r"^epoch (\d+)/(\d+)  (frozen|finetune)\s+loss \d+\.\d{4}  val_balanced_accuracy \d\.\d{4}  lr ")
NOISE = ("cpu_feature_guard", "absl::", "I0000", "INFO mlflow", "Creating initial MLflow", "Warning", "\x1b[")


def test_epoch_line_has_what_matters():
    figures = {"loss": 1.23456, "val_macro_f1": 0.5, "lr": 2e-4, "epoch_seconds": 40.2, "val_seconds": 1.1}
    line = progress.epoch_line(3, 20, "finetune", figures, "val_macro_f1", started=0.0)
    assert line.startswith("epoch  3/20  finetune  loss 1.2346  val_macro_f1 0.5000  lr 2.0e-04  41s  (total ")
    assert progress.duration(41) == "41s" and progress.duration(125) == "2m05s" and progress.duration(3720) == "1h02m"


def test_console_formatter_bare_info_labelled_warnings():
    fmt = ConsoleFormatter("%(message)s")
    info = logging.LogRecord("dermsweep", logging.INFO, __file__, 1, "epoch 1/2", None, None)
    warn = logging.LogRecord("dermsweep", logging.WARNING, __file__, 1, "skipped 2 rows", None, None)
    assert fmt.format(info) == "epoch 1/2" and fmt.format(warn) == "warning: skipped 2 rows"


@pytest.mark.slow
def test_default_train_prints_one_line_per_epoch_and_no_library_noise(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "ABSL", "MLFLOW_", "PYTHONWARN"))}
    cmd = [
        sys.executable,
        REPO_TRAIN,
        "data=synthetic",
        "data.max_images=70",
        "trainer=smoke",
        "model=mobilenet_v1",
        "resolution=64x64",
        "trainer.steps_per_epoch=2",
        "model.height=32",
        "model.width=32",
        "inference.views=none",
        "tracking.log_model=never",
        f"tracking.uri=sqlite:///{tmp_path}/mlflow.db",
        f"hydra.run.dir={tmp_path}/run",
        f"cache_dir={tmp_path}/cache",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env, cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    epochs = [m.groups() for m in map(EPOCH.match, out.splitlines()) if m]
    assert epochs == [("1", "2", "frozen"), ("2", "2", "finetune")], out
    assert [n for n in NOISE if n in out] == [], out
    assert re.search(r"^run [0-9a-f]{32} \(.*\) finished in", out, re.M)
    assert "[dermsweep][INFO]" in (tmp_path / "run" / "train.log").read_text()  # the file keeps timestamps


def test_evaluate_says_how_far_it_is_on_a_large_set():
    import numpy as np

    from dermsweep.shipping.evaluate import predict_batches

    class Uniform:
        def predict_on_batch(self, x):
            return np.full((len(x), 7), 1 / 7)

    said: list[str] = []
    probs = predict_batches(Uniform(), np.zeros((1000, 2, 2, 3)), 64, said.append)
    assert probs.shape == (1000, 7)
    assert said[-1] == "predicted 1,000/1,000 images (100%)" and 8 <= len(said) <= 11, said
    said.clear()
    predict_batches(Uniform(), np.zeros((40, 2, 2, 3)), 16, said.append)
    assert said == []  # a small set: no progress lines


@pytest.mark.parametrize("command", [["promote"], ["ensemble"]])
def test_commands_that_load_keras_print_no_library_start_up_lines(tmp_path, command):
    """TensorFlow says "oneDNN custom operations are on" through absl on import, before any log level is read: a
    command must import it through quiet.import_tensorflow before any module that imports Keras."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TF_CPP", "ABSL", "MLFLOW_", "PYTHONWARN"))}
    store = f"sqlite:///{tmp_path}/mlflow.db"
    # no run needed: each command reaches its imports before it finds the store empty
    cli = [sys.executable, "-m", "dermsweep", *command, "--tracking-uri", store, "--experiment", "nothing-here"]
    done = subprocess.run(cli, capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    out = done.stdout + done.stderr
    assert done.returncode != 0 and "error:" in out, out[-2000:]
    assert [n for n in NOISE if n in out] == [], out
