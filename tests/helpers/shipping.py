"""Fixture runs for the shipping tests (registry, export, predict, serving, CLI).

Each fixture run is logged in the run format a training run follows (dermsweep.tracking.run_format: its tag keys,
metric names and artifact paths), with the model logged by the same function training uses (tracking.model_log).
The model is tiny (Rescaling, one conv, pooling, softmax) on 32x32 synthetic images, trained for a few epochs so its
accuracy means something.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from dermsweep.data.sources.ham10000 import CLASS_NAMES
from dermsweep.evaluation.metrics import METRICS
from helpers.config import HAM10000 as HAM_DIR
from helpers.config import REPO

CLASSES = list(CLASS_NAMES)
SIZE = 32


def ham_images(n: int = 3) -> list[Path]:
    folder = HAM_DIR / "HAM10000_images_part_1"
    return sorted(folder.glob("*.jpg"))[:n] if folder.is_dir() else []


def data_cfg(max_images: int = 140):
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "conf" / "data" / "synthetic.yaml")
    cfg.max_images = max_images
    return cfg


def run_config(seed: int = 42, max_images: int = 140) -> dict:
    """The resolved config a run would log (the parts export and the CLI read)."""
    from omegaconf import OmegaConf

    return {
        "experiment": "dermsweep",
        "seed": seed,
        "data": OmegaConf.to_container(data_cfg(max_images)),
        "model": {"name": "tiny", "alpha": 0.35, "height": SIZE, "width": SIZE},
        "objective": {"metric": "val_balanced_accuracy", "direction": "maximize"},
    }


def prepared(seed: int = 42):
    from dermsweep.data import prepare

    return prepare(data_cfg(), SIZE, SIZE, seed, None)


def tiny_model(seed: int = 0, epochs: int = 8, filters: int = 8):
    """A small Keras classifier trained on the synthetic train split (seconds on a CPU)."""
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input((SIZE, SIZE, 3), name="image")
    x = keras.layers.Rescaling(1.0 / 127.5, offset=-1.0)(inp)
    x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(len(CLASSES), activation="softmax")(x)
    model = keras.Model(inp, out)
    if epochs:
        data = prepared()
        model.compile(optimizer=keras.optimizers.Adam(0.02), loss="sparse_categorical_crossentropy")
        model.fit(data.x["train"].astype("float32"), data.y["train"], epochs=epochs, batch_size=16, verbose=0)
    return model


def meta(split_id: str = "split-a") -> dict:
    return {
        "class_names": CLASSES,
        "input_height": SIZE,
        "input_width": SIZE,
        "resize": "PIL bilinear",
        "backbone": "tiny",
        "alpha": 0.35,
        "split_id": split_id,
        "dataset_id": "ds-synthetic",
    }


def log_run(
    model,
    experiment: str = "dermsweep",
    value: float = 0.5,
    split_id: str = "split-a",
    status: str = "finished",
    role: str = "trial",
    parent: str | None = None,
    study: str | None = "study-a",
    params: dict | None = None,
    with_model: bool = True,
    name: str | None = None,
) -> str:
    """One finished (or pruned/failed) run per the contract. Returns its run id."""
    import mlflow

    from dermsweep.tracking import run_format as rf
    from dermsweep.tracking.model_log import log_keras_model

    mlflow.set_experiment(experiment)
    tags = {
        rf.OBJECTIVE_METRIC: "val_balanced_accuracy",
        rf.OBJECTIVE_DIRECTION: "maximize",
        rf.SPLIT_ID: split_id,
        rf.DATASET_ID: "ds-synthetic",
        rf.STATUS: status,
        rf.ROLE: role,
    }
    if study:
        tags[rf.STUDY_NAME] = study
    if parent:
        tags[rf.PARENT_RUN_ID] = parent
    with mlflow.start_run(run_name=name, tags=tags) as run:
        mlflow.log_params(
            {
                "model.name": "tiny",
                "model.alpha": 0.35,
                "model.height": SIZE,
                "seed": 42,
                "data.source": "synthetic",
                "model.params": str(model.count_params() if model is not None else 1000),  # as training logs it
                **(params or {}),
            }
        )
        for step in range(2):
            mlflow.log_metric(rf.epoch_metric("val_balanced_accuracy"), value - 0.1 + 0.1 * step, step=step)
        if status == "finished":
            for m in METRICS:
                v = value if m == "balanced_accuracy" else 0.5
                mlflow.log_metric(rf.metric(rf.FINAL_VAL, m), v)
                mlflow.log_metric(rf.metric(rf.TEST, m), v - 0.02)
        mlflow.log_dict(run_config(), rf.CONFIG)
        if with_model and model is not None:
            log_keras_model(model, np.zeros((1, SIZE, SIZE, 3), np.float32), meta(split_id))
        else:
            mlflow.log_dict(meta(split_id), rf.MODEL_INFO)
        return run.info.run_id


def log_sweep(
    experiment: str = "dermsweep",
    study: str = "study-a",
    values=(0.6, 0.8),
    split_id="split-a",
    models=None,
    extra_failed: bool = True,
) -> dict:
    """A sweep parent with trials of the given objective values (+ a pruned and a failed trial)."""
    import mlflow

    mlflow.set_experiment(experiment)
    from dermsweep.tracking import run_format as rf

    with mlflow.start_run(
        run_name=f"sweep-{study}", tags={rf.ROLE: "sweep", rf.STUDY_NAME: study, rf.STATUS: "finished"}
    ) as parent:
        pid = parent.info.run_id
    ids = []
    for i, v in enumerate(values):
        model = models[i] if models else tiny_model(seed=i, epochs=0)
        ids.append(
            log_run(
                model,
                experiment,
                v,
                split_id,
                parent=pid,
                study=study,
                name=f"trial-{i}",
                params={"trainer.finetune.lr": 10.0 ** -(3 + i), "augment.name": ["light", "strong"][i % 2]},
            )
        )
    out = {"parent": pid, "trials": ids}
    if extra_failed:
        # pruned/failed trials: better-looking numbers but never eligible
        out["pruned"] = log_run(
            None, experiment, 0.99, split_id, status="pruned", parent=pid, study=study, with_model=False, name="pruned"
        )
        out["failed"] = log_run(
            None, experiment, 0.99, split_id, status="failed", parent=pid, study=study, with_model=False, name="failed"
        )
    return out


def use_store(path: Path) -> str:
    """Point MLflow (env and fluent API) at a fresh sqlite store under `path`. Returns the URI."""
    import mlflow

    path.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{path}/mlflow.db"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def write_image_dir(root: Path, per_class: int = 3) -> Path:
    """A class-per-folder directory of synthetic PNGs (for --data-dir style inputs)."""
    from PIL import Image

    from dermsweep.data.sources.synthetic import render

    for c, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(render(f"dir_{name}_{i}", c, 48, 64)).save(root / name / f"{i}.png")
    return root


def tmp_json(obj) -> Path:
    fd, p = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    Path(p).write_text(json.dumps(obj))
    return Path(p)


# ---------------------------------------------------------------- one store shared by all shipping tests
class Store:
    """A tracking store with: study-a (trials 0.6, 0.8 on split-a, plus pruned/failed 0.99), study-b (0.9 on
    split-b: not comparable), study-c (0.7 on split-a: worse than a's best), all in experiment `dermsweep`,
    and experiment `empty` with only a pruned run."""

    def __init__(self, root: Path):
        self.root = root
        self.uri = f"sqlite:///{root}/mlflow.db"


_SHARED: dict[str, Store] = {}


def shared_store(tmp_path_factory) -> Store:
    if "store" in _SHARED:
        return _SHARED["store"]
    import mlflow

    root = tmp_path_factory.mktemp("shipping_store")
    old = os.environ.get("MLFLOW_TRACKING_URI")
    cwd = os.getcwd()
    try:
        os.chdir(root)  # mlflow's default artifact root (./mlruns) lands in the temp store, not the repo
        use_store(root)
        trained = tiny_model(seed=0, epochs=8)
        weak = tiny_model(seed=1, epochs=0)
        store = Store(root)
        store.model = trained
        store.a = log_sweep(study="study-a", values=(0.6, 0.8), models=[weak, trained])
        store.b = log_sweep(study="study-b", values=(0.9,), split_id="split-b", models=[trained], extra_failed=False)
        store.c = log_sweep(study="study-c", values=(0.7,), models=[weak], extra_failed=False)
        mlflow.set_experiment("empty")
        store.empty = log_run(None, "empty", 0.5, status="pruned", with_model=False)
    finally:
        os.chdir(cwd)
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    _SHARED["store"] = store
    return store


def activate(store: Store, monkeypatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.uri)
    monkeypatch.setenv("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    mlflow.set_tracking_uri(store.uri)
    mlflow.set_registry_uri(store.uri)


def champion_of(store: Store, name: str, monkeypatch=None) -> str:
    """Register study-a's best under `name` once (cached) and return models:/name@champion."""
    key = f"champion:{name}"
    if key not in _SHARED:
        from dermsweep.shipping.promotion import promote
        from dermsweep.tracking.store import connect

        promote(connect(store.uri, create=False), "dermsweep", name, sweep="study-a")
        _SHARED[key] = f"models:/{name}@champion"
    return _SHARED[key]
