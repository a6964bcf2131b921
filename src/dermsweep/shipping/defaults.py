"""The shipping commands' defaults, in a module that imports nothing heavy: `dermsweep COMMAND --help` shows them
without loading TensorFlow or MLflow (seconds). Their owners (promotion, tracking.model_ref, evaluate, converters)
import them from here."""

from __future__ import annotations

from ..tracking import run_format as rf

DEFAULT_MODEL_URI = f"models:/{rf.REGISTERED_MODEL}@{rf.CHAMPION}"
MAX_PARAMS = 4_000_000  # the largest model the gate lets become champion (a phone's budget)
CONFIDENCE = 0.9  # promote when the candidate is better in at least this share of the paired resamples
# One run's validation score sd over training seeds alone: alone where an experiment has no repeated seeds to
# measure it, else pooled with its measurement (seed_noise.py). Pooled over 4 configs x 3 seeds on HAM10000 (the
# recipe single and 3-fold CV, the CV stand-in at two sizes; balanced accuracy 0.007-0.012, macro F1 0.011-0.030,
# macro AUC 0.001-0.008; docs/quality.md).
SEED_NOISE = {"balanced_accuracy": 0.010, "macro_f1": 0.020, "macro_auc": 0.005}
SEED_NOISE_DOF = 8  # its degrees of freedom (4 configs x (3 seeds - 1)): its weight when pooled with an experiment's
EVALUATION_EXPERIMENT = "dermsweep-evaluations"  # where `dermsweep evaluate` records its runs
# Export formats; keras is the reference every other format is compared with (converters.py checks the list).
FORMATS = ("keras", "savedmodel", "tflite_f32", "tflite_f16", "tflite_int8_full", "tflite_int8", "onnx")
