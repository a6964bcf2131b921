"""MLflow pyfunc wrapper that serves the classifier to HTTP clients: base64 image bytes in, class probabilities out.

This file is logged as an MLflow "model from code" (`python_model=<this file>`) by `dermsweep promote`, with the
Keras model file and its metadata as artifacts and `data/images.py`, `diagnoses.py` and `keras_layers.py` as code
paths, so the registered model runs anywhere with numpy, Pillow, Keras and MLflow, dermsweep installed or not:

    mlflow models serve -m models:/skin-lesion-classifier@champion --env-manager local -p 5001
    curl -s 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \
         -d '{"dataframe_records": [{"image": "'"$(base64 -w0 lesion.jpg)"'"}]}'

Input: a DataFrame (or list / dict) with column `image`: base64 text (a `data:image/...;base64,` prefix is fine)
or raw bytes. Output: one row per image with `label` (class code), `name` (full diagnosis), `probability` (of the
label), `probabilities` ({class: probability} for every class) and `error` (null, or why that image was rejected:
the other images in the request are still classified).

Limits (docs/shipping.md): at most MAX_IMAGES images per request (more is a 400 asking to split it), decoded and
predicted CHUNK at a time so memory does not grow with the request; each image follows the decoder's rules
(images.py: size and pixel caps before decoding, EXIF orientation, alpha over white, 16-bit and float levels). A bad
image is an `error` in its row, never a failed request, and no answer carries a stack trace.
"""

from __future__ import annotations

import base64
import binascii
import json

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INTERNAL_ERROR
from mlflow.pyfunc.model import PythonModel

try:  # the same decode-and-resize, the same answer and the same model layers as everywhere else
    from dermsweep import keras_layers
    from dermsweep.data.images import BadImage, load_rgb
    from dermsweep.diagnoses import answer
except ImportError:  # travelling as code_paths without the dermsweep package
    import keras_layers  # type: ignore[no-redef]  # noqa: F401
    from diagnoses import answer  # type: ignore[no-redef]
    from images import BadImage, load_rgb  # type: ignore[no-redef]

COLUMN = "image"
# operating_point: with a model that carries one (e.g. melanoma at 80% sensitivity), its verdict on the image.
FIELDS = ["label", "name", "probability", "probabilities", "operating_point", "error"]
MAX_IMAGES = 64  # images per request
CHUNK = 16  # images decoded and predicted together


def decode_payload(item) -> bytes:
    """bytes from base64 text (optionally a data: URL) or raw bytes. Raises BadImage."""
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    if not isinstance(item, str):
        raise BadImage(f"expected base64 text, got {type(item).__name__}")
    text = item.strip()
    if text.startswith("data:") and "," in text:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadImage(f"not valid base64 ({exc})") from exc


def _items(model_input) -> list:
    import pandas as pd

    if isinstance(model_input, pd.DataFrame):
        if COLUMN in model_input.columns:
            return list(model_input[COLUMN])
        if model_input.shape[1] == 1:
            return list(model_input.iloc[:, 0])
        raise ValueError(f"expected a column named {COLUMN!r}, got {list(model_input.columns)}")
    if isinstance(model_input, dict):
        value = model_input.get(COLUMN)
        if value is None:
            raise ValueError(f"expected key {COLUMN!r}")
        return list(value) if isinstance(value, list | tuple | np.ndarray) else [value]
    if isinstance(model_input, str | bytes):
        return [model_input]
    return list(model_input)


class SkinLesionClassifier(PythonModel):
    """Wraps the Keras model: decode base64, `load_rgb` at the training size, predict, label."""

    def load_context(self, context):
        import keras

        self.model = keras.models.load_model(context.artifacts["keras_model"], compile=False)
        with open(context.artifacts["model_info"]) as fh:
            meta = json.load(fh)
        self.class_names = list(meta["class_names"])
        self.full_names = dict(meta.get("full_names") or {})
        self.operating_point = meta.get("operating_point")
        self.height, self.width = int(meta["input_height"]), int(meta["input_width"])

    def predict(self, context, model_input, params=None):
        import pandas as pd

        try:
            items = _items(model_input)
        except ValueError as exc:
            raise MlflowException.invalid_parameter_value(str(exc)) from None
        if len(items) > MAX_IMAGES:
            raise MlflowException.invalid_parameter_value(
                f"{len(items)} images in one request; the limit is {MAX_IMAGES}: send them in several requests"
            )
        rows: list[dict] = []
        for start in range(0, len(items), CHUNK):
            rows += self._chunk(items[start : start + CHUNK])
        # object dtype keeps None as JSON null (not NaN) for rejected images
        return pd.DataFrame(rows, columns=FIELDS, dtype=object)

    def _chunk(self, items: list) -> list[dict]:
        """One row per item: decoded one at a time (a large image is freed before the next), predicted together."""
        rows: list[dict] = []
        pixels, ok = [], []
        for i, item in enumerate(items):
            try:
                pixels.append(load_rgb(decode_payload(item), self.height, self.width))
                ok.append(i)
                rows.append({})
            except BadImage as exc:
                rows.append(dict.fromkeys(FIELDS) | {"error": str(exc).replace("<bytes>: ", "")})
            except MemoryError:
                rows.append(dict.fromkeys(FIELDS) | {"error": "not enough memory to decode this image"})
            except Exception as exc:  # one image never fails the others, whatever its decoder raised
                rows.append(dict.fromkeys(FIELDS) | {"error": f"cannot decode this image ({type(exc).__name__})"})
        if pixels:
            try:
                probs = np.asarray(self.model.predict_on_batch(np.stack(pixels).astype(np.float32)), np.float64)
            except Exception as exc:  # no stack trace (install paths) in the answer; the server's log has it
                raise MlflowException(f"the model failed ({type(exc).__name__})", INTERNAL_ERROR) from None
            for i, p in zip(ok, probs, strict=True):
                found = answer(p, self.class_names, self.full_names, operating_point=self.operating_point)
                rows[i] = {key: found.get(key) for key in FIELDS}
        return rows


# Models from code: MLflow executes this file when loading the model and takes the model set here.
mlflow.models.set_model(SkinLesionClassifier())
