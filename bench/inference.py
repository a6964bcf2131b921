"""Inference: batch-1 CPU latency and size of the Keras model, SavedModel and the TFLite f32/f16/int8 variants.

The model is what a run ships and `dermsweep export` converts: the project's classifier (dermsweep.training.model.build:
MobileNet v1 a=0.25 with the shared ImageNet weights and a fresh 7-class head; latency and size do not depend on
training) inside the shipped wrapper with its input size fixed at 150x200 (training.gains.wrap, one view, no
calibration). The bare classifier takes any input size, so its TFLite files have a dynamic input. Formats are
produced with the converters `dermsweep export` uses (shipping/converters.py; int8 calibrated on --calibration real
HAM10000 images; --onnx adds ONNX) and timed as dermsweep export times them (timing.median_latency_ms, TFLite/ONNX on
one thread). Both int8 routes are measured: `tflite_int8_full` (every op int8) and `tflite_int8`, the route apps ship,
which keeps the layers that lose most in float. An untrained head has no validation accuracy to search on, so here
`tflite_int8` keeps --int8-float-layers of the debugger's worst layers float (default: what the search kept on a
real champion, docs/shipping.md) plus the float tail, which is what its speed and size cost. Formats are timed in
--rounds interleaved rounds of --runs calls each (after --warmup calls), so all see the same machine load; the
median of the round medians is reported.

    python bench/inference.py [--runs 30] [--rounds 3] [--warmup 5] [--onnx] [--height 150 --width 200]
                              [--int8-float-layers N]
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import _common as C

# Layers the int8 search kept float on a real champion (docs/shipping.md, "int8 that keeps quality").
INT8_FLOAT_LAYERS = 4


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=30, help="timed calls per format per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--calibration", type=int, default=100, help="int8 calibration images")
    p.add_argument("--height", type=int, default=150)
    p.add_argument("--width", type=int, default=200)
    p.add_argument("--alpha", type=float, default=0.25)
    p.add_argument("--weights", default=C.DEFAULT_WEIGHTS)
    p.add_argument("--onnx", action="store_true", help="also export and time ONNX (slower to convert)")
    p.add_argument(
        "--int8-float-layers",
        type=int,
        default=INT8_FLOAT_LAYERS,
        help=f"layers tflite_int8 keeps float (default {INT8_FLOAT_LAYERS}: what the search kept on a real champion)",
    )
    args = p.parse_args(argv)
    C.shrink(args, "inference", runs=2, rounds=1, warmup=1, calibration=16, height=32, width=40)

    import numpy as np
    import tensorflow as tf
    from omegaconf import OmegaConf

    from dermsweep.data import pixels
    from dermsweep.shipping import converters as ex
    from dermsweep.shipping.export import human_size, size_on_disk
    from dermsweep.shipping.int8 import Int8Options
    from dermsweep.timing import median_latency_ms
    from dermsweep.training.gains import Gains, wrap
    from dermsweep.training.model import build

    start_load = C.load()
    h, w = args.height, args.width
    catalog, table = C.ham10000_table(args.data, args.calibration)
    calib = pixels.decode(catalog, table, h, w, cache_dir=None).pixels
    model = build(
        OmegaConf.create(
            {
                "name": "mobilenet_v1",
                "alpha": args.alpha,
                "height": h,
                "width": w,
                "weights": args.weights,
                "dropout": 0.3,
                "frozen_fraction": 0.6,
            }
        ),
        7,
    )
    # what a run logs and export converts: fixed input size, one view, temperature 1, no prior adjustment
    model = wrap([model], h, w, Gains())
    x1 = calib[:1].astype(np.float32)
    model(x1)
    out = Path(tempfile.mkdtemp(prefix="dermsweep-bench-inference-"))
    runners, build_s, notes = {}, {}, []

    keras_file = out / "model.keras"
    with C.Timer() as t:
        model.save(keras_file)
    build_s["keras"] = t.s
    runners["keras"] = (lambda x: np.asarray(model(x, training=False)), keras_file)
    # The same model through one traced tf.function (as dermsweep.training.batch_predict runs it): Keras at its fastest.
    traced = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec((None, h, w, 3), tf.float32)]
    )
    runners["keras_traced"] = (lambda x: traced(x).numpy(), keras_file)
    build_s["keras_traced"] = build_s["keras"]  # the same .keras file
    ctx = ex.Context(calib, "float", int8=Int8Options(float_layers=args.int8_float_layers))
    kept_float: list[str] = []
    for name, converter in ex.CONVERTERS.items():  # the same converters `dermsweep export` uses
        if name == "onnx" and not args.onnx:
            continue
        path = out / converter.file
        try:
            with C.Timer() as t:
                details = converter.write(model, path, ctx)
            build_s[name] = t.s
            runners[name] = (converter.runner(path), path)
            if details:
                kept_float = [layer["layer"] for layer in details["float_layers"]]
        except Exception as exc:
            notes.append(f"{name} failed: {exc}")

    ref = runners["keras"][0](x1)
    rounds: dict[str, list[float]] = {k: [] for k in runners}
    loads = []
    for _ in range(args.rounds):
        for name, (fn, _) in runners.items():
            rounds[name].append(median_latency_ms(fn, x1, args.runs, args.warmup))
        loads.append(C.load()["loadavg_1m"])
    results = []
    for name, (fn, path) in runners.items():
        probs = np.asarray(fn(x1)).reshape(ref.shape)
        results.append(
            {
                "format": name,
                "size_bytes": size_on_disk(path),
                "latency_ms": C.median(rounds[name]),
                "latency_rounds_ms": rounds[name],
                "convert_s": build_s.get(name),
                "max_abs_diff_vs_keras": float(np.max(np.abs(probs - ref))),
            }
        )
    rows = [
        [
            r["format"],
            human_size(r["size_bytes"]),
            f"{r['latency_ms']:.2f}",
            f"{r['max_abs_diff_vs_keras']:.1e}",
            f"{r['convert_s']:.1f}",
        ]
        for r in results
    ]
    print()
    print(C.table(rows, ["format", "size", "latency ms (batch 1)", "max |p - keras|", "convert s"]))
    end_load = C.load()
    print(f"\nload: start {start_load}, end {end_load}")
    by = {r["format"]: r for r in results}
    int8 = by["tflite_int8"]
    fastest_keras = min(("keras", "keras_traced"), key=lambda k: by[k]["latency_ms"])
    speedup = by[fastest_keras]["latency_ms"] / int8["latency_ms"]
    size_ratio = int8["size_bytes"] / by["keras"]["size_bytes"]
    print(f"tflite_int8 kept float: {len(kept_float)} layer(s) {kept_float} + the tail (logits, softmax)")
    if "tflite_int8_full" in by:
        cost = int8["latency_ms"] / by["tflite_int8_full"]["latency_ms"]
        print(f"tflite_int8 latency / tflite_int8_full: {cost:.2f}x")
    targets = [
        C.target(
            f"inference: int8 TFLite (layers kept float: {len(kept_float)}) speed-up over Keras ({fastest_keras}, "
            "the faster Keras call) at batch 1",
            ">= 2x",
            speedup,
            speedup >= 2.0,
            "x",
        ),
        C.target("inference: int8 TFLite size / Keras .keras file", "<= 0.33", size_ratio, size_ratio <= 1 / 3),
    ]
    C.print_targets(targets)
    out_json = {
        "settings": vars(args),
        "load_start": start_load,
        "load_end": end_load,
        "loads_during": loads,
        "results": results,
        "targets": targets,
        "int8_kept_float": kept_float,
        "notes": notes
        + [
            "keras = eager model(x) call as dermsweep export times it; keras_traced = the same model in one "
            "tf.function; TFLite and ONNX on one thread; SavedModel and Keras use TensorFlow's default "
            "thread pools (both cores). The int8 target compares with the faster of the two Keras calls."
        ],
    }
    C.save("inference", out_json, args.out)
    shutil.rmtree(out, ignore_errors=True)
    return out_json


if __name__ == "__main__":
    main()
