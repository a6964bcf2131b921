"""The stand-in Hydra app of the sweeper tests (tests/sweeper_app/my_app.py: fake per-epoch values, no TensorFlow),
run in subprocesses from a test's working directory `ws` (the `ws` fixture) that holds its MLflow store, Optuna
storage and Hydra's output folders; and reading back what a sweep left there."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

APP = Path(__file__).resolve().parents[1] / "sweeper_app" / "my_app.py"
TIMEOUT = 240


def app_env() -> dict:
    """This environment without dermsweep's and MLflow's variables (each test says what it wants), Hydra's full
    tracebacks on, output unbuffered and TensorFlow's log quiet."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DERMSWEEP_", "MLFLOW_"))}
    return {**env, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "1"}


def base_args(ws: Path, sweep_dir: str = "ms") -> list[str]:
    return [
        f"hydra.sweep.dir={ws / sweep_dir}",
        f"hydra.run.dir={ws / 'run'}",
        f"tracking.uri=sqlite:///{ws / 'mlflow.db'}",
        f"tracking.artifact_root={ws / 'artifacts'}",
    ]


def optuna_args(ws: Path, n_trials: int, *extra: str, study: str = "s", plots: bool = False, **kw) -> list[str]:
    return [
        "-m",
        "hydra/sweeper=optuna",
        *base_args(ws, **kw),
        f"hydra.sweeper.storage=sqlite:///{ws / 'optuna.db'}",
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweeper.n_trials={n_trials}",
        f"hydra.sweeper.plots={str(plots).lower()}",
        "hydra.sweeper.sampler.seed=7",
        "hydra.sweeper.validate=null",  # the pre-flight knows train.py's config, not this stand-in's
        "x=interval(0, 1)",
        "y=choice(0.2, 0.6, 0.9)",
        *extra,
    ]


def run_app(ws: Path, args: list[str], check: bool = True, timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, str(APP), *args], cwd=ws, env=app_env(), capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"app failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def spawn_app(ws: Path, args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(APP), *args],
        cwd=ws,
        env=app_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # A suite started in the background (`cmd &` without job control) hands its children SIGINT ignored, and
        # Python then never raises KeyboardInterrupt: the interrupt tests need the default back.
        preexec_fn=_default_sigint,
    )


def _default_sigint() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def load_study(ws: Path, name: str = "s", storage: Path | None = None):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{storage or ws / 'optuna.db'}")


def mlflow_client(ws: Path):
    import mlflow

    return mlflow.MlflowClient(f"sqlite:///{ws / 'mlflow.db'}")


def runs_of(ws: Path, experiment: str = "sweeper-test"):
    client = mlflow_client(ws)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, "experiment not created"
    return client, client.search_runs([exp.experiment_id], max_results=1000)


def states(study) -> dict:
    from collections import Counter

    return dict(Counter(t.state.name for t in study.trials))
