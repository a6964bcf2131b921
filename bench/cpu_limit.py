"""CPU limit: where the shipped recipe's training step stands against this machine's arithmetic peak.

For --model (a conf/model recipe with its shared ImageNet weights; default mobilenet_v1_a075, the shipped one) at
150x200, fine-tuning as the recipe does (its model.frozen_fraction):
- the floating-point operations of one image's forward pass, counted by TensorFlow's profiler on the traced graph,
  and of one training step per image, estimated as 3x the forward pass (forward, gradients of the activations, of
  the weights; the usual rule for convolutional nets);
- the measured training speed on float32 batches already in memory (no decoding, no augmentation: the Keras step
  alone), with XLA off (Keras' default on a machine without an accelerator) and on (`jit_compile=True`), the two
  alternating epoch by epoch after a warm-up each, medians reported;
- the machine's peak: cores x clock x FLOP per cycle from the CPU's vector flags (32 single-precision FLOP a cycle
  with AVX2 + FMA, assuming two 256-bit FMA units; 64 with AVX-512; 8 with SSE only): an estimate, said as one.
The share of the peak that the step reaches says how much a faster kernel could still gain; the thread and oneDNN
settings TensorFlow ran with are recorded beside it.

    python bench/cpu_limit.py [--model mobilenet_v1_a075] [--images 640] [--epochs 3] [--batch 32]
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import _common as C


def peak_gflops() -> dict:
    """Single-precision peak of this machine's cores from /proc/cpuinfo (Linux); None where it cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {"gflops": None, "why": "no /proc/cpuinfo"}
    found = re.search(r"^flags\s*:\s*(.*)$", text, re.M)
    flags = set(found.group(1).split()) if found else set()
    mhz = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", text, re.M)]
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 16 if "avx" in flags else 8
    cores = os.cpu_count() or 1
    ghz = (max(mhz) / 1000) if mhz else None
    return {
        "cores": cores,
        "ghz": round(ghz, 2) if ghz else None,
        "flop_per_cycle": per_cycle,
        "vector": {64: "avx512", 32: "avx2+fma", 16: "avx", 8: "sse"}[per_cycle],
        "gflops": round(cores * ghz * per_cycle, 1) if ghz else None,
    }


def forward_flops(model, h: int, w: int) -> int:
    """FLOPs of one image's forward pass, counted on the frozen inference graph by TensorFlow's profiler."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    dtype = model.inputs[0].dtype if model.inputs else "float32"
    fn = tf.function(lambda x: model(x, training=False))
    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(tf.TensorSpec([1, h, w, 3], dtype)))
    opts = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    opts["output"] = "none"
    return int(tf.compat.v1.profiler.profile(graph=frozen.graph, options=opts).total_float_ops)


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--model", default="mobilenet_v1_a075", help="conf/model recipe (default: the shipped one)")
    p.add_argument("--weights-dir", default=C.DEFAULT_WEIGHTS_DIR, help="where the recipe's ImageNet weights are")
    p.add_argument("--images", type=int, default=640, help="images per timed epoch")
    p.add_argument("--epochs", type=int, default=3, help="timed epochs per setting (after one warm-up each)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--height", type=int, default=150)
    p.add_argument("--width", type=int, default=200)
    args = p.parse_args(argv)
    if C.shrink(args, "cpu_limit", images=64, epochs=1, height=32, width=40):
        args.weights_dir = None
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")

    import keras
    import numpy as np
    import tensorflow as tf

    from dermsweep.training.model import build, set_finetune_depth

    start_load = C.load()
    h, w, k = args.height, args.width, 7
    cfg = C.recipe(args.model, args.weights_dir, h, w)
    steps = max(1, args.images // args.batch)
    n = steps * args.batch
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(n, h, w, 3)).astype(np.float32)  # speed does not depend on the pixels
    y = np.eye(k, dtype=np.float32)[rng.integers(0, k, size=n)]
    data = C.in_memory(x, y, args.batch, steps)

    models = {}
    for setting, jit in (("xla_off", False), ("xla_on", True)):
        model = build(cfg, k)
        set_finetune_depth(model, float(cfg.frozen_fraction))
        model.compile(
            optimizer=keras.optimizers.Adam(1e-4),
            loss="categorical_crossentropy",
            metrics=["accuracy"],
            jit_compile=jit,
        )
        models[setting] = model
    flops = forward_flops(models["xla_off"], h, w)

    def epoch(setting: str) -> float:
        start = time.perf_counter()
        models[setting].fit(data, steps_per_epoch=steps, epochs=1, shuffle=False, verbose=0)
        return time.perf_counter() - start

    print(f"{args.model} fine-tuning at {h}x{w}: warming up ({n} images a timed epoch)", flush=True)
    warm = {s: epoch(s) for s in models}  # traces (and for XLA compiles) the train step
    times: dict[str, list[float]] = {s: [] for s in models}
    for _ in range(args.epochs):
        for s in models:
            times[s].append(epoch(s))
    img_s = {s: n / C.median(v) for s, v in times.items()}
    peak = peak_gflops()
    step_gflop = 3 * flops / 1e9
    results = {
        s: {
            "img_per_s": img_s[s],
            "achieved_gflops": img_s[s] * step_gflop,
            "share_of_peak": (img_s[s] * step_gflop / peak["gflops"]) if peak["gflops"] else None,
        }
        for s in models
    }
    rows = [
        [
            s,
            f"{r['img_per_s']:.1f}",
            f"{r['achieved_gflops']:.1f}",
            f"{r['share_of_peak']:.0%}" if r["share_of_peak"] is not None else "n/a",
        ]
        for s, r in results.items()
    ]
    print(f"\nforward pass {flops / 1e9:.3f} GFLOP an image; training step ~{step_gflop:.2f} GFLOP an image (3x)")
    print(
        f"peak (estimate): {peak['cores']} cores x {peak['ghz']} GHz x {peak['flop_per_cycle']} FLOP/cycle "
        f"({peak['vector']}) = {peak['gflops']} GFLOP/s"
        if peak.get("gflops")
        else f"peak: unknown ({peak.get('why')})"
    )
    print(C.table(rows, ["setting", "img/s (train step)", "GFLOP/s", "share of peak"]))
    threads = {
        "intra_op": tf.config.threading.get_intra_op_parallelism_threads(),  # 0 = TensorFlow's choice (all cores)
        "inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        "TF_ENABLE_ONEDNN_OPTS": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (on by default on x86 Linux)"),
    }
    speedup = img_s["xla_on"] / img_s["xla_off"]
    targets = [
        C.target("XLA's speed-up of the training step (informative)", "> 1.10 to adopt", speedup, speedup > 1.10)
    ]
    end_load = C.load()
    print(f"\nload: start {start_load}, end {end_load}")
    C.print_targets(targets)
    out = {
        "settings": vars(args),
        "load_start": start_load,
        "load_end": end_load,
        "forward_gflop_per_image": flops / 1e9,
        "train_step_gflop_per_image_estimate": step_gflop,
        "peak": peak,
        "threads": threads,
        "warmup_epoch_s": warm,
        "epoch_s": times,
        "results": results,
        "targets": targets,
    }
    C.save("cpu_limit", out, args.out)
    return out


if __name__ == "__main__":
    main()
