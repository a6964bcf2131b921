"""Packaging the REST model: the pyfunc wrapper (serving.py: base64 images in, labelled probabilities out) logged
into the winning run beside its Keras model, which promotion registers and `mlflow models serve` serves as is."""

from __future__ import annotations

import base64
import io
import json
import tempfile
from pathlib import Path
from typing import Any

from ..tracking import run_format as rf
from ..tracking.model_ref import logged_models_of_run, resolve
from ..tracking.store import first_line
from .ranking import RegistryError

# Files that travel with the serving model as code (serving.py imports them when dermsweep is not installed).
HERE = Path(__file__).resolve().parent
SERVING_CODE = HERE / "serving.py"
TRAVELLING_CODE = (HERE.parent / "data" / "images.py", HERE.parent / "diagnoses.py", HERE.parent / "keras_layers.py")


def ensure_serving_model(client, run_id: str) -> str:
    """models:/<id> of the run's pyfunc serving model, logging it into the run first if it has none."""
    exp_id = client.get_run(run_id).info.experiment_id
    existing = [
        m
        for m in logged_models_of_run(client, exp_id, run_id)
        if m.name == rf.SERVING and str(getattr(m, "status", "READY")).upper().endswith("READY")
    ]
    if existing:
        existing.sort(key=lambda m: m.creation_timestamp or 0)
        return f"models:/{existing[-1].model_id}"
    return log_serving_model(run_id, client)


def log_serving_model(run_id: str, client=None) -> str:
    """Log serving.py (models from code) into `run_id`, wrapping the run's Keras model. Returns its URI."""
    import mlflow
    import mlflow.pyfunc
    import numpy as np
    import pandas as pd
    from mlflow.entities import LoggedModelStatus
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema
    from PIL import Image

    from ..tracking.model_ref import complete_meta

    ref = resolve(f"runs:/{run_id}/{rf.MODEL}", client)
    if "class_names" not in ref.meta or "input_height" not in ref.meta:
        raise RegistryError(f"run {run_id}'s model has no metadata (class_names, input_height, input_width)")
    meta = complete_meta(ref.meta, (None, *ref.input_size, 3), len(ref.class_names))
    h, w = ref.input_size
    client = client or mlflow.MlflowClient()
    with tempfile.TemporaryDirectory() as tmp:
        info = Path(tmp) / rf.MODEL_INFO
        info.write_text(json.dumps(meta, indent=2))
        buf = io.BytesIO()
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
        example = pd.DataFrame({"image": [base64.b64encode(buf.getvalue()).decode()]})
        model_meta: dict[str, Any] = dict(meta, keras_model_uri=f"models:/{ref.model_id}", input="base64 image")
        # Created explicitly so it belongs to the run's experiment (not whatever experiment is active here).
        exp_id = client.get_run(run_id).info.experiment_id
        lm = client.create_logged_model(
            exp_id, name=rf.SERVING, source_run_id=run_id, tags={rf.ROLE: "serving", rf.KERAS_MODEL: str(ref.model_id)}
        )
        try:
            logged = Model.log(
                artifact_path=None,
                name=rf.SERVING,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=lm.model_id,
                python_model=str(SERVING_CODE),
                artifacts={"keras_model": str(ref.keras_path), "model_info": str(info)},
                code_paths=[str(p) for p in TRAVELLING_CODE],
                signature=ModelSignature(inputs=Schema([ColSpec("string", "image")])),
                input_example=example,
                pip_requirements=_requirements(),
                metadata=model_meta,
            )
        except Exception as exc:
            client.finalize_logged_model(lm.model_id, LoggedModelStatus.FAILED)
            raise RegistryError(f"could not log the serving model into run {run_id}: {first_line(exc)}") from exc
    if str(client.get_logged_model(lm.model_id).status) != "READY":
        client.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
    return logged.model_uri


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    # simplejpeg: images.py's strict JPEG check (without it the served model refuses every JPEG)
    for dist in ("mlflow", "keras", "numpy", "pillow", "simplejpeg", "pandas", "tensorflow-cpu", "tensorflow"):
        try:
            reqs.append(f"{dist}=={version(dist)}")
        except PackageNotFoundError:
            continue
    if any(r.startswith("tensorflow-cpu") for r in reqs):
        reqs = [r for r in reqs if not r.startswith("tensorflow==")]
    return reqs
