"""Find and load a trained classifier, with its metadata, from any of the places a model can live.

Accepted model references (`resolve` / `load`):
  models:/NAME@ALIAS    registered model by alias (e.g. models:/skin-lesion-classifier@champion)
  models:/NAME/VERSION  registered model by version number
  models:/m-...         a LoggedModel id
  runs:/RUN_ID/model    the model a run logged under that name
  RUN_ID                a run id (32 hex characters): its logged Keras model ("model")
  path/to/model.keras   a Keras file (metadata from model_info.json beside it, else inferred)
  path/to/model.tflite  only for `predict` (see load_tflite)

A registered version may be the Keras flavour the training run logged, or the pyfunc "serving" wrapper `promote`
registers (dermsweep.serving); both carry the Keras file, and `load` always returns the Keras model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..data.sources.ham10000 import CLASS_NAMES, FULL_NAMES
from ..errors import DermsweepError
from . import run_format as rf
from .store import connect, first_line

RUN_ID = re.compile(r"^[0-9a-f]{32}$")


class ModelNotFound(DermsweepError):
    """A model reference (URI, alias, version, run, file) points at nothing loadable."""


@dataclass
class ModelRef:
    """Where a model came from: enough to log exports back to its run and to explain it to a person."""

    uri: str
    local_dir: Path | None = None  # downloaded MLflow model directory (None for a bare file)
    keras_path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    run_id: str | None = None
    model_name: str | None = None  # registered model name
    version: str | None = None  # registered version
    model_id: str | None = None  # LoggedModel id

    @property
    def class_names(self) -> list[str]:
        return list(self.meta["class_names"])

    @property
    def input_size(self) -> tuple[int, int]:
        return int(self.meta["input_height"]), int(self.meta["input_width"])

    def describe(self) -> str:
        if self.model_name and self.version:
            return f"{self.model_name} v{self.version} (run {self.run_id})"
        if self.run_id:
            return f"run {self.run_id}"
        return str(self.uri)


# ---------------------------------------------------------------- resolving references
def resolve(uri: str, client: Any = None) -> ModelRef:
    """Download the referenced model (if it lives in MLflow) and read its metadata. Does not load Keras."""
    uri = str(uri).strip()
    path = Path(uri)
    if uri.endswith(".keras"):
        if not path.is_file():
            raise ModelNotFound(f"no such Keras file: {uri}")
        return ModelRef(uri=uri, keras_path=path, meta=_sidecar_meta(path))
    if uri.endswith(".tflite"):
        raise ModelNotFound(f"{uri} is a TFLite file: use `dermsweep predict --tflite {uri}`")
    if path.is_dir() and (path / "MLmodel").is_file():
        return _from_local_dir(ModelRef(uri=uri), path)

    client = client or connect(create=False)
    ref = ModelRef(uri=uri)
    mlflow_uri = uri
    if RUN_ID.match(uri):
        mlflow_uri = _run_model_uri(client, uri, rf.MODEL)
        ref.run_id = uri
    elif uri.startswith("runs:/"):
        parts = uri[len("runs:/") :].split("/", 1)
        run_id, name = parts[0], (parts[1] if len(parts) > 1 and parts[1] else rf.MODEL)
        mlflow_uri = _run_model_uri(client, run_id, name)
        ref.run_id = run_id
    elif uri.startswith("models:/"):
        body = uri[len("models:/") :]
        if body.startswith("m-") and "/" not in body and "@" not in body:
            ref.model_id = body
        else:
            mv = _model_version(client, body)
            ref.model_name, ref.version, ref.run_id = mv.name, str(mv.version), mv.run_id
            ref.model_id = getattr(mv, "model_id", None)
            mlflow_uri = f"models:/{mv.name}/{mv.version}"
    else:
        raise ModelNotFound(
            f"unrecognised model reference {uri!r}: use models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, "
            "a run id, or a .keras file"
        )
    import mlflow

    try:
        location = _files_of(client, mlflow_uri)
        local = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=location, dst_path=str(_download_dir()), tracking_uri=str(client.tracking_uri)
            )
        )
    except Exception as exc:
        raise ModelNotFound(f"cannot download model {uri}: {first_line(exc)}") from exc
    return _from_local_dir(ref, local)


def _files_of(client: Any, mlflow_uri: str) -> str:
    """Where a models:/ reference's files are, asked of the client's own store. MLflow would resolve models:/ against
    the process-global tracking URI, which may name another store than the one given (`--tracking-uri`, a test's)."""
    for _ in range(2):  # a registered version's source may itself be models:/<logged model id>
        if not mlflow_uri.startswith("models:/"):
            return mlflow_uri
        body = mlflow_uri.removeprefix("models:/")
        if body.startswith("m-") and "/" not in body:
            mlflow_uri = client.get_logged_model(body).artifact_location
        else:
            name, version = body.split("/", 1)
            mlflow_uri = client.get_model_version_download_uri(name, version)
    return mlflow_uri


def _download_dir() -> Path:
    """A folder of our own for a downloaded model, removed when the process exits. Without one, MLflow hands back
    a local store's own folder and writes `registered_model_meta` into it: a read-only store then fails."""
    import atexit
    import shutil
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="dermsweep-model-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


def _model_version(client: Any, body: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        if "@" in body:
            name, alias = body.split("@", 1)
            return client.get_model_version_by_alias(name, alias)
        name, _, version = body.rpartition("/")
        if not name or not version.isdigit():
            raise ModelNotFound(f"bad model URI models:/{body}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        return client.get_model_version(name, version)
    except MlflowException as exc:
        raise ModelNotFound(
            f"no registered model at models:/{body}: {first_line(exc)}"
            + (" (run `dermsweep promote` first)" if "@champion" in body else "")
        ) from exc


def _run_model_uri(client: Any, run_id: str, name: str) -> str:
    """models:/<id> of the model that run `run_id` logged under `name`."""
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as exc:
        raise ModelNotFound(f"no run {run_id} in this tracking store") from exc
    models = logged_models_of_run(client, run.info.experiment_id, run_id)
    named = [m for m in models if m.name == name]
    if not named:
        have = ", ".join(sorted({m.name for m in models})) or "none"
        raise ModelNotFound(f"run {run_id} has no logged model named {name!r} (logged models: {have})")
    named.sort(key=lambda m: m.creation_timestamp or 0)
    return f"models:/{named[-1].model_id}"


def logged_models_of_run(client: Any, experiment_id: str, run_id: str) -> list:
    # the client's store, not the process-global tracking URI
    return list(
        client.search_logged_models(experiment_ids=[experiment_id], filter_string=f"source_run_id = '{run_id}'")
    )


def _from_local_dir(ref: ModelRef, local: Path) -> ModelRef:
    from mlflow.models import Model

    ref.local_dir = local
    mlmodel = Model.load(str(local / "MLmodel"))
    ref.run_id = ref.run_id or mlmodel.run_id
    ref.model_id = ref.model_id or getattr(mlmodel, "model_id", None)
    candidates = [local / "data" / "model.keras"] + sorted((local / "artifacts").rglob("*.keras"))
    found = [p for p in candidates if p.is_file()]
    if not found:
        found = sorted(local.rglob("*.keras"))
    if not found:
        raise ModelNotFound(f"model {ref.uri} holds no Keras model file (flavours: {', '.join(mlmodel.flavors)})")
    ref.keras_path = found[0]
    meta = dict(mlmodel.metadata or {})
    info = local / "artifacts" / rf.MODEL_INFO
    if "class_names" not in meta and info.is_file():
        meta.update(json.loads(info.read_text()))
    ref.meta = meta
    return ref


def _sidecar_meta(model_file: Path) -> dict:
    for cand in (model_file.with_name(rf.MODEL_INFO), model_file.with_suffix(".json")):
        if cand.is_file():
            try:
                return json.loads(cand.read_text())
            except ValueError:
                pass
    return {}


def complete_meta(meta: dict, input_shape: Any, num_classes: int) -> dict:
    """Fill what metadata lacks from the model itself (input size) and the HAM10000 class list and names."""
    meta = dict(meta)
    if "input_height" not in meta or "input_width" not in meta:
        h, w = input_shape[1], input_shape[2]
        if h is None or w is None:
            raise ModelNotFound("model has no fixed input size and no metadata saying which to use")
        meta.setdefault("input_height", int(h))
        meta.setdefault("input_width", int(w))
    if "class_names" not in meta:
        if num_classes != len(CLASS_NAMES):
            meta["class_names"] = [f"class_{i}" for i in range(num_classes)]
        else:
            meta["class_names"] = list(CLASS_NAMES)
    if len(meta["class_names"]) != num_classes:
        raise ModelNotFound(f"metadata lists {len(meta['class_names'])} classes but the model outputs {num_classes}")
    # Models logged before full names travelled in the metadata: HAM10000's codes are known here.
    meta.setdefault("full_names", {c: FULL_NAMES.get(c, c) for c in meta["class_names"]})
    return meta


def load(uri: str, client: Any = None) -> tuple[Any, ModelRef]:
    """(keras_model, ModelRef) for any accepted reference. Raises ModelNotFound / TrackingError."""
    return load_resolved(resolve(uri, client))


def load_resolved(ref: ModelRef) -> tuple[Any, ModelRef]:
    """The Keras model of a reference `resolve` found, with `ref.meta` completed from the model."""
    assert ref.keras_path is not None  # resolve() raises ModelNotFound otherwise
    model = load_keras_file(ref.keras_path)
    ref.meta = complete_meta(ref.meta, model.input_shape, int(model.output_shape[-1]))
    return model, ref


def load_keras_file(path: Path) -> Any:
    import keras

    from .. import keras_layers  # noqa: F401 - registers the layers shipped models are made of

    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as exc:
        raise ModelNotFound(f"cannot load Keras model {path}: {first_line(exc)}") from exc
