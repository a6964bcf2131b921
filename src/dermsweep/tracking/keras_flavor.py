"""MLflow's Keras 3 flavour, plus what a logged dermsweep model needs to load anywhere through MLflow's pyfunc
loader (`mlflow.pyfunc.load_model`, `mlflow models serve -m runs:/...`, the UI's "use this model" snippet).

A shipped model holds dermsweep's own layers (test-time views, the calibrated softmax: dermsweep.keras_layers);
Keras only rebuilds them in a process that registered them first, and a process loading the model through MLflow
never imported dermsweep. So the model carries keras_layers.py as MLflow code, and its pyfunc loader is a small
module beside it that registers the layers (dermsweep's own when installed, else the copy) and then hands over to
`mlflow.keras`. The Keras flavour itself is unchanged: `mlflow.keras.load_model` needs the layers imported
(`import dermsweep.keras_layers`, as dermsweep.tracking.model_ref does) or passed as `custom_objects`.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

CODE_DIR = "code"
LOADER_MODULE = "dermsweep_keras_loader"
LOADER_SOURCE = '''"""MLflow pyfunc loader of a dermsweep Keras model: registers its layers, then loads it as
mlflow.keras does."""

try:  # the installed package's layers when there is one, else the copy travelling beside this file
    from dermsweep import keras_layers  # noqa: F401
except ImportError:
    import keras_layers  # noqa: F401

import mlflow.keras


def _load_pyfunc(path):
    return mlflow.keras._load_pyfunc(path)
'''


def layers_source() -> Path:
    from .. import keras_layers

    return Path(keras_layers.__file__)


def save_model(model: Any, path: str, mlflow_model: Any = None, **kwargs: Any) -> None:
    """`mlflow.keras.save_model`, then the layers' code and the pyfunc loader that imports them (the module's
    docstring says why). Called by `mlflow.models.Model.log(flavor=this module)`."""
    import mlflow.keras
    from mlflow.models import Model
    from mlflow.models.model import MLMODEL_FILE_NAME
    from mlflow.pyfunc import CODE, FLAVOR_NAME, MAIN

    if mlflow_model is None:
        mlflow_model = Model()
    mlflow.keras.save_model(model, path, mlflow_model=mlflow_model, **kwargs)
    code = Path(path) / CODE_DIR
    code.mkdir(exist_ok=True)
    shutil.copyfile(layers_source(), code / "keras_layers.py")
    (code / f"{LOADER_MODULE}.py").write_text(LOADER_SOURCE)
    pyfunc = mlflow_model.flavors[FLAVOR_NAME]
    pyfunc[MAIN] = LOADER_MODULE
    pyfunc[CODE] = CODE_DIR
    mlflow_model.save(str(Path(path) / MLMODEL_FILE_NAME))
