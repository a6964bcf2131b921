"""Batch prediction through one traced function per model.

keras' model.predict re-traces its graph for every new batch shape and after every compile (seconds each for a
MobileNet on CPU); this traces once for any batch size and is reused for every epoch's validation and the final
evaluation.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

_ATTR = "_dermsweep_predict_fn"


def predict(model, dataset) -> np.ndarray:
    fn = getattr(model, _ATTR, None)
    if fn is None:
        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        setattr(model, _ATTR, fn)
    return np.concatenate([fn(batch).numpy() for batch in dataset], axis=0)
