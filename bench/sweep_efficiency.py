"""Sweep efficiency: time to quality of the same Optuna search with and without pruning, where trials learn.

Every sweep runs `python train.py -m hydra/sweeper=optuna ...` as a subprocess with the same seed, search space,
trial count and data: by default all of the real HAM10000 (../shared), a real backbone with its ImageNet weights
(--model, a conf/model recipe: mobilenet_v1_a025, the small sweep backbone) at 150x200, 3 frozen + 6 fine-tuning
epochs, so trials separate good recipes from bad. Each sweep has its own Optuna study and MLflow store in a temp
folder; the decoded-pixel disk cache is filled before any sweep starts, so none pays for decoding. Unpruned =
hydra.sweeper.pruner=null; each pruned sweep uses one of --pruners: sha = SuccessiveHalvingPruner (asynchronous
successive halving: min_resource=1 epoch, reduction_factor=3), hyperband = HyperbandPruner (min_resource=1 epoch),
median = the sweeper's MedianPruner. The sweeper's TPE sampler draws its first 10 trials at random from the seed,
so those trials get the same parameters in every sweep: the comparison shows what pruning saves and throws away.

Reported per sweep: wall time, trials complete / pruned, the best validation objective with its 95% interval (the
best trial's `<metric>_lo95` / `_hi95` when its run logged them, dermsweep.evaluation.bootstrap), the time to reach
95% of the unpruned sweep's best, and a time-to-quality figure (best objective so far against sweep time, every
sweep on one plot) written beside the JSON result. Full size takes hours on 2 cores; --tiny runs it in minutes.

    python bench/sweep_efficiency.py [--trials 16] [--images 0 (all)] [--model mobilenet_v1_a025]
                                     [--frozen-epochs 3] [--finetune-epochs 6] [--pruners sha,hyperband]
    python bench/sweep_efficiency.py --folds 5 --pruners racing     # racing over CV folds against every fold
"""

from __future__ import annotations

import datetime as dt
import math
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
OBJECTIVE = "val_balanced_accuracy"  # the config's default objective, what every sweep here maximises
PRUNERS = {
    "median": ["hydra.sweeper.pruner._target_=optuna.pruners.MedianPruner"],
    # The default pruner's MedianPruner-only keys are dropped by the sweeper (quietly).
    "sha": [
        "hydra.sweeper.pruner._target_=optuna.pruners.SuccessiveHalvingPruner",
        "+hydra.sweeper.pruner.min_resource=1",
        "+hydra.sweeper.pruner.reduction_factor=3",
    ],
    "hyperband": [
        "hydra.sweeper.pruner._target_=optuna.pruners.HyperbandPruner",
        "+hydra.sweeper.pruner.min_resource=1",
    ],
    # With --folds: racing over cross-validation folds (dermsweep.sweep.fold_racing).
    "racing": [
        "hydra.sweeper.pruner._target_=dermsweep.sweep.fold_racing.FoldRacingPruner",
        "+hydra.sweeper.pruner.confidence=0.9",
        "hydra.sweeper.pruner.n_startup_trials=1",
    ],
}


def base_overrides(args, tmp: Path) -> list[str]:
    weights = [f"paths.weights_dir={Path(args.weights_dir).resolve()}"] if args.weights_dir else ["model.weights=null"]
    return [
        "hydra/sweeper=optuna",
        "data=ham10000",
        f"data.root={args.data}",
        f"data.max_images={args.images or 'null'}",
        f"model={args.model}",
        *weights,
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
        *([f"data.split.folds={args.folds}"] if args.folds else []),
        f"hydra.sweeper.sampler.seed={args.seed}",
        "hydra.sweeper.plots=false",
        *SPACE,
    ]


def prewarm_cache(args, tmp: Path) -> float:
    from omegaconf import OmegaConf

    from dermsweep.data import prepare

    cfg = OmegaConf.load(C.ROOT / "conf" / "data" / "ham10000.yaml")
    cfg.root, cfg.max_images = args.data, args.images or None
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
    started = dt.datetime.now()  # Optuna's trial datetimes are local and naive: the same clock
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
    best = s.best_trial if complete else None
    return {
        "name": name,
        "wall_s": t.s,
        "curve": curve(s.trials, started),
        "best_interval95": interval(tmp, study, best.number) if best else None,
        "trials": len(states),
        "complete": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "best_value": max((t_.value for t_ in complete), default=float("nan")),
        "best_params": best.params if best else None,
        "best_trial": best.number if best else None,
        "trial_seconds_total": sum(durations),
        "trial_seconds": durations,
        "epochs_run": sum(len(t_.intermediate_values) for t_ in s.trials),
        "load_before": load_before,
        "load_after": load_after,
        "command": " ".join(cmd),
    }


def curve(trials, started: dt.datetime) -> list[tuple[float, float]]:
    """(seconds since the sweep started, best objective so far) at each completed trial, in order of completion."""
    import optuna

    done = sorted(
        (t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.datetime_complete is not None),
        key=lambda t: t.datetime_complete,
    )
    points, best = [], -math.inf
    for t in done:
        best = max(best, t.value)
        points.append(((t.datetime_complete - started).total_seconds(), best))
    return points


def time_to_reach(points: list[tuple[float, float]], level: float) -> float | None:
    """The first time the best-so-far curve reaches `level`; None when it never does."""
    return next((s for s, best in points if best >= level), None)


def interval(tmp: Path, study: str, number: int) -> list[float] | None:
    """The best trial's 95% interval of its objective, when its run logged one (`<metric>_lo95`, `_hi95`)."""
    from mlflow.tracking import MlflowClient

    from dermsweep.tracking import run_format as rf

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp}/mlflow.db")
    experiment = client.get_experiment_by_name("bench-sweep-efficiency")
    if experiment is None:
        return None
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"tags.`{rf.STUDY_NAME}` = '{study}' and tags.`{rf.TRIAL_NUMBER}` = '{number}'",
    )
    if not runs:
        return None
    metrics = runs[0].data.metrics
    name = rf.final_metric(OBJECTIVE)
    lo, hi = metrics.get(f"{name}_lo95"), metrics.get(f"{name}_hi95")
    return [lo, hi] if lo is not None and hi is not None else None


def plot(runs: list[dict], level: float | None, path: Path) -> Path:
    """Best objective so far against sweep time, one step line per sweep, and the 95%-of-unpruned level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for r in runs:
        if r.get("curve"):
            xs = [0.0] + [s / 60 for s, _ in r["curve"]] + [r["wall_s"] / 60]
            ys = [math.nan] + [b for _, b in r["curve"]] + [r["curve"][-1][1]]
            ax.step(xs, ys, where="post", label=f"{r['name']} ({r['complete']} complete, {r['pruned']} pruned)")
    if level is not None and math.isfinite(level):
        ax.axhline(level, color="grey", linestyle=":", label="95% of the unpruned best")
    ax.set_xlabel("sweep time (minutes)")
    ax.set_ylabel("best validation balanced accuracy so far")
    ax.set_title("Time to quality: pruned vs unpruned sweeps (same space and seed)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--images", type=int, default=0, help="HAM10000 images (lesion-grouped subset); 0 = all")
    p.add_argument("--model", default="mobilenet_v1_a025", help="conf/model recipe (its ImageNet weights)")
    p.add_argument("--weights-dir", default=C.DEFAULT_WEIGHTS_DIR, help="where the recipe's weights file is")
    p.add_argument("--height", type=int, default=150)
    p.add_argument("--width", type=int, default=200)
    p.add_argument("--frozen-epochs", type=int, default=3)
    p.add_argument("--finetune-epochs", type=int, default=6)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument(
        "--folds",
        type=int,
        default=0,
        help="every trial a k-fold cross-validation (pruners then act after each fold: --pruners racing)",
    )
    p.add_argument("--pruners", default="sha,hyperband", help=f"comma-separated, from {sorted(PRUNERS)}")
    p.add_argument(
        "--startup-trials", type=int, default=None, help="MedianPruner n_startup_trials (default: the sweeper's, 5)"
    )
    C.add_log_model_option(p)
    p.add_argument("--keep", action="store_true", help="keep the temp folder (studies, MLflow store, logs)")
    args = p.parse_args(argv)
    if C.shrink(args, "sweep_efficiency", trials=3, images=168, height=32, width=40, frozen_epochs=1):
        args.weights_dir, args.finetune_epochs = None, 2
    unknown = [name for name in args.pruners.split(",") if name not in PRUNERS]
    if unknown:
        raise SystemExit(f"--pruners: unknown {unknown}; choose from {sorted(PRUNERS)}")
    args.data = str(Path(args.data).resolve())

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
    level = 0.95 * un["best_value"] if "error" not in un and math.isfinite(un["best_value"]) else None
    for r in runs_ok:
        r["time_to_95pct_of_unpruned_best_s"] = time_to_reach(r["curve"], level) if level is not None else None
    rows = [
        [
            r["name"],
            f"{r['wall_s']:.0f}",
            f"{3600 * r['complete'] / r['wall_s']:.1f}",
            r["trials"],
            r["complete"],
            r["pruned"],
            r["failed"],
            r["epochs_run"],
            f"{r['best_value']:.4f}",
            "[{:.3f}, {:.3f}]".format(*r["best_interval95"]) if r["best_interval95"] else "not logged",
            _seconds(r["time_to_95pct_of_unpruned_best_s"]),
        ]
        for r in runs_ok
    ]
    print()
    print(
        C.table(
            rows,
            [
                "sweep",
                "wall s",
                "complete / h",
                "trials",
                "complete",
                "pruned",
                "failed",
                "epochs (folds) run",
                "best val balanced acc",
                "95% interval",
                "s to 95% of unpruned best",
            ],
        )
    )
    result_path = Path(args.out) if args.out else C.RESULTS / "sweep_efficiency.json"
    figure = plot(runs_ok, level, result_path.with_suffix(".png")) if runs_ok else None
    if figure:
        print(f"time-to-quality figure: {figure}")
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
        "level_95pct_of_unpruned_best": level,
        "figure": str(figure) if figure else None,
        "targets": targets,
        "tmp": str(tmp) if args.keep else None,
    }
    C.save("sweep_efficiency", out, args.out)
    if not args.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    if failed:
        raise SystemExit(f"failed sweep(s): {failed}")
    return out


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f}"


if __name__ == "__main__":
    main()
