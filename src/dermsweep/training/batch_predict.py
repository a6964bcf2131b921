"""Batch prediction through one compiled function per model, on the running Keras backend.

keras' model.predict builds a new predict function after every compile() and, on TensorFlow and JAX, traces it
again for every new batch shape (seconds each for a MobileNet on CPU). Here each model gets one function, kept on
the model, for every epoch's validation and the final evaluation:
- TensorFlow: one tf.function traced for any batch size;
- JAX: one jax.jit of the model called on all its variables' current values (so new weights, and the trainable
  flags fine-tuning changes, need no new trace); batches are padded to the first batch's size, so the smaller last
  batch of every split reuses the same compiled program;
- PyTorch: the eager call without autograd (Keras runs PyTorch eagerly; torch.compile costs more than it saves for
  one validation pass per epoch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import keras
import numpy as np

_ATTR = "_dermsweep_predict_fn"
Predict = Callable[[np.ndarray], np.ndarray]


def _tensorflow(model) -> Predict:
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
    return lambda x: fn(x).numpy()


def _jax(model) -> Predict:
    import jax

    variables = list(model.variables)

    @jax.jit
    def call(values, x):
        with keras.StatelessScope(state_mapping=list(zip(variables, values, strict=True))):
            return model(x, training=False)

    size: list[int] = []  # the first batch's size: what later, smaller batches are padded to

    def predict(x: np.ndarray) -> np.ndarray:
        n = len(x)
        if not size:
            size.append(n)
        if n < size[0]:
            x = np.concatenate([x, np.zeros((size[0] - n, *x.shape[1:]), x.dtype)])
        return np.asarray(call([v.value for v in variables], x))[:n]

    return predict


def _torch(model) -> Predict:
    import torch

    def predict(x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return keras.ops.convert_to_numpy(model(x, training=False))

    return predict


COMPILERS: dict[str, Callable[[keras.Model], Predict]] = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}


def predict(model, batches: Iterable[np.ndarray]) -> np.ndarray:
    fn = getattr(model, _ATTR, None)
    if fn is None:
        fn = COMPILERS[keras.backend.backend()](model)
        setattr(model, _ATTR, fn)
    return np.concatenate([fn(np.asarray(batch, np.float32)) for batch in batches], axis=0)
