"""Sweep efficiency: the same Optuna search with and without pruning (wall time, trials, best score).

Both sweeps run `python train.py -m hydra/sweeper=optuna ...` as a subprocess with the same seed, search space,
trial count and data (a small real HAM10000 subset at low resolution, shared v1 a=0.25 weights), each with its own
Optuna study and MLflow store in a temp folder. The decoded-pixel disk cache is filled before either sweep starts,
so neither pays for decoding. Unpruned = hydra.sweeper.pruner=null; each pruned sweep uses one of --pruners:
median = the sweeper's default MedianPruner (n_startup_trials=5, n_warmup_steps=1), sha = SuccessiveHalvingPruner
(asynchronous successive halving: min_resource=1 epoch, reduction_factor=3), hyperband = HyperbandPruner.
The sweeper's TPE sampler draws its first 10 trials at random from the seed, so up to 10 trials get the same
parameters in every sweep: the best-score comparison mostly shows what pruning threw away, not sampler luck.

    python bench/sweep_efficiency.py [--trials 12] [--images 600] [--frozen-epochs 2] [--finetune-epochs 4]
                                     [--pruners median,sha] [--startup-trials 5]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common as C

SPACE = [
    "model.frozen_fraction=interval(0.3,1.0)",
    "model.dropout=interval(0.0,0.5)",
    "trainer.frozen.lr=tag(log,interval(1e-4,1e-2))",
    "trainer.finetune.lr=tag(log,interval(1e-5,1e-3))",
]
PRUNERS = {
    "median": ["hydra.sweeper.pruner._target_=optuna.pruners.MedianPruner"],
    # The default pruner's MedianPruner-only keys are dropped by the sweeper (with a warning).
    "sha": [
        "hydra.sweeper.pruner._target_=optuna.pruners.SuccessiveHalvingPruner",
        "+hydra.sweeper.pruner.min_resource=1",
        "+hydra.sweeper.pruner.reduction_factor=3",
    ],
    "hyperband": [
        "hydra.sweeper.pruner._target_=optuna.pruners.HyperbandPruner",
        "+hydra.sweeper.pruner.min_resource=1",
    ],
}


def base_overrides(args, tmp: Path) -> list[str]:
    return [
        "hydra/sweeper=optuna",
        "data=ham10000",
        f"data.root={args.data}",
        f"data.max_images={args.images}",
        "model=mobilenet_v1",
        "model.alpha=0.25",
        f"model.weights={args.weights}",
        f"model.height={args.height}",
        f"model.width={args.width}",
        f"trainer.frozen.epochs={args.frozen_epochs}",
        f"trainer.finetune.epochs={args.finetune_epochs}",
        "trainer.verbose=false",
        f"tracking.log_model={args.log_model}",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        "experiment=bench-sweep-efficiency",
        f"seed={args.seed}",
        f"cache_dir={tmp}/cache",
        f"hydra.sweeper.storage=sqlite:///{tmp}/optuna.db",
        f"hydra.sweeper.n_trials={args.trials}",
        f"hydra.sweeper.sampler.seed={args.seed}",
        "hydra.sweeper.plots=false",
        *SPACE,
    ]


def prewarm_cache(args, tmp: Path) -> float:
    from omegaconf import OmegaConf

    from dermsweep.data import prepare

    cfg = OmegaConf.load(C.ROOT / "conf" / "data" / "ham10000.yaml")
    cfg.root, cfg.max_images = args.data, args.images
    with C.Timer() as t:
        prepare(cfg, args.height, args.width, args.seed, str(tmp / "cache"))
    return t.s


def sweep(name: str, extra: list[str], args, tmp: Path) -> dict:
    import optuna

    study = f"bench-{name}"
    cmd = [
        sys.executable,
        "train.py",
        "-m",
        *base_overrides(args, tmp),
        f"hydra.sweeper.study_name={study}",
        f"hydra.sweep.dir={tmp}/multirun-{name}",
        *extra,
    ]
    log = tmp / f"{name}.log"
    print(f"[{time.strftime('%H:%M:%S')}] sweep '{name}' ({args.trials} trials), log {log}", flush=True)
    env = dict(os.environ, HYDRA_FULL_ERROR="1")
    env.pop("MLFLOW_TRACKING_URI", None)
    load_before = C.load()
    with C.Timer() as t, log.open("w") as fh:
        rc = subprocess.run(cmd, cwd=C.ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env).returncode
    load_after = C.load()
    if rc != 0:  # reported, and the other sweeps still run and are saved
        tail = log.read_text()[-3000:]
        print(f"sweep {name} failed (exit {rc}); end of its log:\n{tail}", flush=True)
        return {"name": name, "error": f"exit {rc}", "wall_s": t.s, "command": " ".join(cmd)}
    s = optuna.load_study(study_name=study, storage=f"sqlite:///{tmp}/optuna.db")
    states = [t_.state.name for t_ in s.trials]
    complete = [t_ for t_ in s.trials if t_.state == optuna.trial.TrialState.COMPLETE]
    durations = [t_.duration.total_seconds() for t_ in s.trials if t_.duration is not None]
    return {
        "name": name,
        "wall_s": t.s,
        "trials": len(states),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "best_value": max((t_.value for t_ in complete), default=float("nan")),
        "best_params": s.best_trial.params if complete else None,
        "trial_seconds_total": sum(durations),
        "trial_seconds": durations,
        "epochs_run": sum(len(t_.intermediate_values) for t_ in s.trials),
        "load_before": load_before,
        "load_after": load_after,
        "command": " ".join(cmd),
    }


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=12)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=80)
    p.add_argument("--frozen-epochs", type=int, default=2)
    p.add_argument("--finetune-epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--pruners", default="median,sha", help=f"comma-separated, from {sorted(PRUNERS)}")
    p.add_argument(
        "--startup-trials", type=int, default=None, help="MedianPruner n_startup_trials (default: the sweeper's, 5)"
    )
    C.add_log_model_option(p)
    p.add_argument("--weights", default=C.DEFAULT_WEIGHTS)
    p.add_argument("--keep", action="store_true", help="keep the temp folder (studies, MLflow store, logs)")
    args = p.parse_args(argv)
    args.data = str(Path(args.data).resolve())
    args.weights = str(Path(args.weights).resolve())

    tmp = Path(tempfile.mkdtemp(prefix="dermsweep-bench-sweep-"))
    start_load = C.load()
    warm_s = prewarm_cache(args, tmp)
    print(f"pixel cache filled in {warm_s:.1f}s ({tmp}/cache)", flush=True)
    runs = [sweep("unpruned", ["hydra.sweeper.pruner=null"], args, tmp)]
    for pruner in args.pruners.split(","):
        extra = list(PRUNERS[pruner])
        if pruner == "median" and args.startup_trials is not None:
            extra.append(f"hydra.sweeper.pruner.n_startup_trials={args.startup_trials}")
        runs.append(sweep(f"pruned-{pruner}", extra, args, tmp))
    un = runs[0]
    failed = [r["name"] for r in runs if "error" in r]
    runs_ok = [r for r in runs if "error" not in r]
    rows = [
        [
            r["name"],
            f"{r['wall_s']:.0f}",
            r["trials"],
            r["complete"],
            r["pruned"],
            r["failed"],
            r["epochs_run"],
            f"{r['best_value']:.4f}",
        ]
        for r in runs_ok
    ]
    print()
    print(
        C.table(
            rows, ["sweep", "wall s", "trials", "complete", "pruned", "failed", "epochs run", "best val balanced acc"]
        )
    )
    targets = []
    for pr in runs_ok[1:] if "error" not in un else []:
        pr["wall_time_ratio"] = pr["wall_s"] / un["wall_s"]
        pr["best_gap_points"] = (un["best_value"] - pr["best_value"]) * 100
        targets += [
            C.target(
                f"sweep ({pr['name']}): wall time / unpruned",
                "<= 0.50",
                pr["wall_time_ratio"],
                pr["wall_time_ratio"] <= 0.5,
            ),
            C.target(
                f"sweep ({pr['name']}): best val balanced acc, unpruned minus pruned (points)",
                "<= 1.0",
                pr["best_gap_points"],
                pr["best_gap_points"] <= 1.0,
                " pt",
            ),
        ]
    end_load = C.load()
    print(f"\nload: start {start_load}, end {end_load}")
    C.print_targets(targets)
    out = {
        "settings": vars(args),
        "load_start": start_load,
        "load_end": end_load,
        "prewarm_cache_s": warm_s,
        "runs": runs,
        "targets": targets,
        "tmp": str(tmp) if args.keep else None,
    }
    C.save("sweep_efficiency", out, args.out)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        raise SystemExit(f"failed sweep(s): {failed}")
    return out


if __name__ == "__main__":
    main()
