"""What `trainer.deterministic=true` (the default: deterministic kernels, batches served in order) costs in training
speed, on the shipped recipe's network (MobileNet v1 a=0.75 from its ImageNet weights, 150x200, the whole backbone
fine-tuned, batch 32).

Each measurement is its own `train.py` process (TensorFlow's op determinism is process-wide, it cannot be switched
off again): no frozen phase, 2 fine-tuning epochs of --steps steps on generated images; the second epoch's
`epoch/train_seconds` is the figure (the first one traces the graph). The modes alternate for --repeats rounds, so
both see the same machine load; run it alone.

    python bench/determinism.py [--steps 20] [--repeats 2] [--weights-dir ../shared/weights]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import _common as C

BATCH = 32  # the trainer's default batch size, which the runs use
COST_TARGET = 0.15  # the rule: more than this, and determinism must be a switch with a reasoned default


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20, help="training steps per epoch")
    p.add_argument("--repeats", type=int, default=2, help="rounds of (deterministic, not) runs")
    p.add_argument("--weights-dir", default=C.DEFAULT_WEIGHTS_DIR, help="folder of the Keras ImageNet weights")
    args = p.parse_args(argv)
    tiny = args.tiny
    if tiny:
        args.steps, args.repeats = 2, 1
        args.out = args.out or str(C.TINY_RESULTS / "determinism.json")
        print("--tiny: random-init v1 at 64x64, 2 steps: figures mean nothing", flush=True)
    seconds: dict[bool, list[float]] = {True: [], False: []}
    with tempfile.TemporaryDirectory(prefix="dermsweep-bench-det-") as tmp:
        for round_ in range(args.repeats):
            for deterministic in (True, False):
                value = _one_run(Path(tmp), round_, deterministic, args, tiny)
                seconds[deterministic].append(value)
                print(f"round {round_ + 1}: deterministic={deterministic}: {value / args.steps * 1000:.0f} ms a step")
    on, off = C.median(seconds[True]) / args.steps, C.median(seconds[False]) / args.steps
    cost = on / off - 1.0
    rows = [
        ["deterministic (default)", f"{on * 1000:.0f} ms", f"{BATCH / on:.0f} images/s"],
        ["not deterministic", f"{off * 1000:.0f} ms", f"{BATCH / off:.0f} images/s"],
    ]
    print(C.table(rows, ["trainer.deterministic", "seconds a step (median)", "throughput"]))
    print(f"cost of determinism: {cost:+.1%} of training time")
    result = {
        "steps": args.steps,
        "repeats": args.repeats,
        "seconds_per_step": {"deterministic": on, "not_deterministic": off},
        "epoch_seconds": {"deterministic": seconds[True], "not_deterministic": seconds[False]},
        "cost": cost,
        "machine": C.machine(),
        "load": C.load(),
        "targets": [
            {
                "name": "cost of trainer.deterministic",
                "target": f"<= {COST_TARGET:.0%} (else a switch with a reasoned default)",
                "measured": cost * 100,
                "unit": "%",
                "met": cost <= COST_TARGET,
            }
        ],
    }
    C.save("determinism", result, args.out)
    return result


def _one_run(tmp: Path, round_: int, deterministic: bool, args, tiny: bool) -> float:
    """The second fine-tuning epoch's seconds of one train.py process."""
    import mlflow

    store = tmp / f"r{round_}-{int(deterministic)}"
    model = (
        ["model=mobilenet_v1", "resolution=64x64"]
        if tiny
        else ["model=mobilenet_v1_a075", "resolution=150x200", f"paths.weights_dir={Path(args.weights_dir).resolve()}"]
    )
    cmd = [
        sys.executable,
        str(C.ROOT / "train.py"),
        "data=synthetic",
        "data.num_images=420",
        *model,
        "model.frozen_fraction=0",
        "trainer.frozen.epochs=0",
        "trainer.finetune.epochs=2",
        f"trainer.steps_per_epoch={args.steps}",
        f"trainer.deterministic={str(deterministic).lower()}",
        "inference.views=none",
        "tracking.log_model=never",
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        f"cache_dir={tmp}/cache",
        f"hydra.run.dir={store}/hydra",
        "experiment=determinism",
    ]
    subprocess.run(cmd, check=True, cwd=C.ROOT, stdout=subprocess.DEVNULL)
    client = mlflow.MlflowClient(f"sqlite:///{store}/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name("determinism").experiment_id])
    history = client.get_metric_history(run.info.run_id, "epoch/train_seconds")
    return sorted(history, key=lambda m: m.step)[-1].value


if __name__ == "__main__":
    main()
