"""int8 that keeps quality: post-training quantisation with the layers that lose most kept in float.

    calibrate once on training images (the converter's representative dataset)
    -> TFLite's quantization debugger on `debug_images` of them: every quantised op's error against the same op
       in float, fed the same (quantised) input, as RMSE / quantisation step
    -> ops grouped into layers (a shipped model runs its classifier once per test-time view: one layer is one op
       per view) and ranked, worst first
    -> 0, 1, 2, 4, ... of the worst layers kept float (then bisection between the last failure and the first
       success), each candidate scored on the validation split against the float (Keras) model
    -> the first candidate within `tolerance` of float balanced accuracy with at least `min_agreement` top-1
       agreement is shipped; none within `max_float_layers`: the one closest to float, said as not met

Every choice uses calibration (training) or validation images, never test. The tail after the classifier's
features (logits, mean over views, temperature, prior bias, softmax: a few dozen multiply-adds) stays float by
default (`float_tail`), so probabilities come out at float resolution. An op with no int8 kernel stays float: float
fallback is allowed here, unlike the full-integer route (`tflite_int8_full`), which fails on such an op.

Candidates are made with `mlir_quantize`, the function behind `QuantizationDebugger.get_nondebug_quantized_model`,
called directly so that int8 input/output tensors (`--int8-io int8`) work too.
"""

from __future__ import annotations

import csv
import io
import re
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..evaluation import metrics
from ..quiet import silenced


@dataclass(frozen=True)
class Int8Options:
    tolerance: float = 0.01  # largest |validation balanced accuracy - float's| accepted
    # smallest share of validation images with float's top-1 class; 0 = balanced accuracy alone decides (measured on
    # a real champion: full int8 moved balanced accuracy 0.3 points at 90.6% agreement, and asking for 99% kept 16
    # layers float for a file 3.5x larger that was no closer to float)
    min_agreement: float = 0.0
    max_float_layers: int = 16  # the search's budget of layers kept float
    float_layers: int | None = None  # keep exactly this many worst layers float, without a search
    float_tail: bool = True  # keep the ops no larger than the output (logits .. softmax) float
    debug_images: int = 32  # calibration images the quantization debugger runs

    def __post_init__(self) -> None:
        if not 0 <= self.tolerance <= 1 or not 0 <= self.min_agreement <= 1:
            raise ConfigError(f"int8: tolerance and min_agreement are shares in 0..1, not {self}")
        if self.max_float_layers < 0 or (self.float_layers is not None and self.float_layers < 0):
            raise ConfigError("int8: layer counts cannot be negative")
        if self.debug_images < 1:
            raise ConfigError("int8: the debugger needs at least one image")


@dataclass
class Validation:
    x: np.ndarray  # uint8 (n, H, W, 3)
    y: np.ndarray  # labels (n,)
    reference: np.ndarray  # the float model's probabilities on x (Keras)


@dataclass
class Layer:
    name: str  # the op's output name with the per-view call suffixes removed
    op: str  # TFLite op type
    nodes: list[str]  # the op's output name in each call (what the quantizer's deny-list takes)
    rmse_scale: float  # mean over the calls of sqrt(MSE) / quantisation step (0.29: rounding alone)
    elements: int  # output elements per image

    def summary(self) -> dict:
        return {"layer": self.name, "op": self.op, "calls": len(self.nodes), "rmse_scale": round(self.rmse_scale, 4)}


@dataclass
class Step:
    float_layers: int
    size_bytes: int
    images: int  # validation images scored (fewer when stopped early on disagreements)
    agreement: float
    balanced_accuracy: float | None = None  # None when stopped early
    delta: float | None = None  # balanced_accuracy - float's
    max_abs_diff: float | None = None
    met: bool = False
    seconds: float = 0.0


@dataclass
class Int8Result:
    model: bytes
    report: dict = field(default_factory=dict)


def quantize(
    model,
    calibration: np.ndarray,
    validation: Validation | None,
    options: Int8Options = Int8Options(),
    int8_io: str = "float",
    say: Callable[[str], None] = lambda msg: None,
) -> Int8Result:
    """The int8 TFLite bytes for `model` (raw 0-255 pixels in) and a report of every choice."""
    import tensorflow as tf

    start = time.perf_counter()
    debug = calibration[: max(1, options.debug_images)]

    def representative():
        for img in calibration:
            yield [img[None].astype(np.float32)]

    def debug_set():
        for img in debug:
            yield [img[None].astype(np.float32)]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    with silenced():
        debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=debug_set)
        debugger.run()
    dump = io.StringIO()
    debugger.layer_statistics_dump(dump)
    layers = rank(csv_rows(dump.getvalue()), model_names(model))
    outputs = int(np.prod(model.output_shape[1:]))
    tail = [layer for layer in layers if options.float_tail and layer.elements <= outputs]
    # Data movement (views, padding) loses nothing: never worth a float copy.
    body = [layer for layer in layers if layer.elements > outputs or not options.float_tail]
    body = [layer for layer in body if layer.rmse_scale > 1e-3]
    calibrated = debugger.calibrated_model
    del debugger
    took = time.perf_counter() - start
    say(f"int8: {len(layers)} layers measured on {len(debug)} calibration images in {took:.0f} s")

    made: dict[int, bytes] = {}

    def build(n: int) -> bytes:
        if n not in made:
            nodes = [node for layer in tail + body[:n] for node in layer.nodes]
            made[n] = _mlir_quantize(calibrated, nodes, int8_io)
        return made[n]

    report: dict[str, Any] = {
        "route": "selective: the worst layers by the quantization debugger's RMSE / scale kept float",
        "options": asdict(options),
        "calibration_images": len(calibration),
        "debug_images": len(debug),
        "ranking": [layer.summary() for layer in body[: max(options.max_float_layers, 20)]],
        "float_tail": [layer.name for layer in tail],
        "steps": [],
    }
    steps: list[Step] = []
    if validation is None or options.float_layers is not None:
        chosen = min(options.float_layers or 0, len(body))
        report["search"] = (
            f"none: {chosen} worst layers kept float as asked"
            if options.float_layers is not None
            else "none: no validation data, so no layer was kept float beyond the tail"
        )
    else:

        def attempt(n: int) -> bool:
            step = score(build(n), n, validation, options)
            steps.append(step)
            say(
                f"int8: {n} layers float: agreement {step.agreement:.1%} on {step.images} images"
                + (f", balanced accuracy {step.delta:+.4f} vs float" if step.delta is not None else " (stopped)")
            )
            return step.met

        chosen = search(attempt, min(options.max_float_layers, len(body)))
        if not any(s.met for s in steps):
            chosen = closest(steps, chosen)
        report["search"] = (
            f"{len(steps)} candidates scored on {len(validation.y)} validation images against float "
            f"(balanced accuracy {metrics.score('balanced_accuracy', validation.y, validation.reference):.4f})"
        )
    result = build(chosen)
    report["steps"] = [asdict(s) for s in steps]
    report["float_layers"] = [layer.summary() for layer in body[:chosen]]
    report["met"] = None if not steps else any(s.met and s.float_layers == chosen for s in steps)
    report["float_ops"] = float_ops(result)
    report["seconds"] = round(time.perf_counter() - start, 1)
    return Int8Result(result, report)


def closest(steps: list[Step], fallback: int) -> int:
    """No candidate met the target: the one whose validation balanced accuracy is nearest float's (fewer layers
    float on a tie); `fallback` when none was scored in full."""
    scored = [s for s in steps if s.delta is not None]
    if not scored:
        return fallback
    return min(scored, key=lambda s: (abs(s.delta or 0.0), s.float_layers)).float_layers


def search(attempt: Callable[[int], bool], budget: int) -> int:
    """The fewest layers kept float for which `attempt` passes: 0, 1, 2, 4, ... up to `budget`, then bisection
    between the last failure and the first success. `budget` when none passes."""
    schedule = sorted({0, budget, *(n for n in (2**i for i in range(budget.bit_length())) if n < budget)})
    failed, passed = -1, None
    for n in schedule:
        if attempt(n):
            passed = n
            break
        failed = n
    if passed is None:
        return budget
    while passed - failed > 1:
        mid = (failed + passed) // 2
        if attempt(mid):
            passed = mid
        else:
            failed = mid
    return passed


def score(model: bytes, float_layers: int, validation: Validation, options: Int8Options) -> Step:
    """One candidate on the validation images, stopped as soon as it has disagreed with float too often."""
    from .predict import TFLiteRunner

    start = time.perf_counter()
    allowed = int(np.floor((1.0 - options.min_agreement) * len(validation.y) + 1e-9))
    expected = validation.reference.argmax(1)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidate.tflite"
        path.write_bytes(model)
        runner = TFLiteRunner(path, num_threads=2)
        probs = []
        wrong = 0
        for i, img in enumerate(validation.x):
            p = runner(img)
            probs.append(p)
            wrong += int(p.argmax() != expected[i])
            if wrong > allowed:
                break
        del runner
    done = len(probs)
    step = Step(float_layers, len(model), done, 1.0 - wrong / done if done else 0.0)
    if done == len(validation.y):
        got = np.stack(probs)
        step.agreement = float(np.mean(got.argmax(1) == expected))
        step.balanced_accuracy = metrics.score("balanced_accuracy", validation.y, got)
        reference = metrics.score("balanced_accuracy", validation.y, validation.reference)
        step.delta = step.balanced_accuracy - reference
        step.max_abs_diff = float(np.max(np.abs(got - validation.reference)))
        step.met = abs(step.delta) <= options.tolerance + 1e-12 and step.agreement >= options.min_agreement
    step.seconds = round(time.perf_counter() - start, 1)
    return step


def _mlir_quantize(calibrated: bytes, nodes: list[str], int8_io: str) -> bytes:
    import tensorflow as tf
    from tensorflow.lite.python import convert

    edge = tf.int8 if int8_io == "int8" else tf.float32
    with silenced():
        return convert.mlir_quantize(
            calibrated,
            input_data_type=edge,
            output_data_type=edge,
            denylisted_nodes=nodes or None,
        )


# ---------------------------------------------------------------- the debugger's statistics, by layer
def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def model_names(model) -> tuple[str, list[str]]:
    """The outer model's name and every nested model's (their calls get numbered suffixes in op names)."""
    import keras

    nested: list[str] = []

    def walk(m) -> None:
        for layer in m.layers:
            if isinstance(layer, keras.Model):
                nested.append(layer.name)
                walk(layer)

    walk(model)
    return model.name, nested


def layer_name(node: str, names: tuple[str, list[str]]) -> str:
    """`shipped_1/classifier_logits_3/backbone_1/conv_pw_13_relu_1/Relu6;...` -> `classifier_logits/backbone/
    conv_pw_13_relu_1/Relu6`: the first fused name, without the outer model and the nested models' call numbers."""
    outer, nested = names
    parts = node.split(";")[0].split("/")
    if parts and re.fullmatch(re.escape(outer) + r"(_\d+)?", parts[0]):
        parts = parts[1:]
    out = []
    for part in parts:
        for name in nested:
            if re.fullmatch(re.escape(name) + r"(_\d+)?", part):
                part = name
                break
        out.append(part)
    return "/".join(out)


def rank(rows: Iterable[dict[str, str]], names: tuple[str, list[str]]) -> list[Layer]:
    """The debugger's per-op rows grouped by layer, worst RMSE / scale first."""
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        groups.setdefault(layer_name(row["tensor_name"], names), []).append(row)
    layers = []
    for name, members in groups.items():
        errors = []
        for row in members:
            scale = float(row["scale"])
            mse = float(row["mean_squared_error"])
            errors.append(np.sqrt(mse) / scale if scale > 0 and np.isfinite(mse) else 0.0)
        layers.append(
            Layer(
                name,
                members[0]["op_name"],
                [row["tensor_name"] for row in members],
                float(np.mean(errors)),
                int(float(members[0]["num_elements"])),
            )
        )
    return sorted(layers, key=lambda layer: -layer.rmse_scale)


def float_ops(model: bytes) -> dict[str, int]:
    """Op types computing in float in a TFLite model (quantise/dequantise at the float islands' edges left out)."""
    import tensorflow as tf

    with silenced():
        interp = tf.lite.Interpreter(model_content=model)
    counts: dict[str, int] = {}
    for op in interp._get_ops_details():  # no public listing of ops (the debugger reads it the same way)
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE") or not len(op["outputs"]):
            continue
        if interp._get_tensor_details(op["outputs"][0], 0)["dtype"] == np.float32:
            counts[op["op_name"]] = counts.get(op["op_name"], 0) + 1
    return counts
