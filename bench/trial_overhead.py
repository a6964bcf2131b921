"""Per-trial overhead: time from a trial's launch to its first training step, and its share spent on tracking.

Runs --trials trials in ONE process, as a sweep does: each trial's config is composed with Hydra's compose API
(conf/, the same overrides a sweep gives) and handed to dermsweep.task.run, so later trials reuse the in-process
pixel cache. Nothing in the product is changed: the benchmark wraps functions by monkeypatching:

  launch         task.run is called
  data / build   task.prepare, task.build
  first step     a callback on the first training batch of the trial (begin: the step is about to run;
                 end: it ran, which includes tracing Keras' train function for the fresh model)
  tracking       every mlflow.* call the task makes (start/end run, params, metrics, texts, figures), dermsweep's
                 tracking helpers (connect, experiment lookup, log_json/log_figure, log_keras_model = saving the
                 model to MLflow), the matplotlib figures rendered only for tracking, and the best-weights
                 checkpoint saves/restores (keras Model.save_weights/load_weights)

Not included: what a Hydra sweeper does between trials (ask Optuna, compose, job folder); see sweep_efficiency.

    python bench/trial_overhead.py [--trials 4] [--images 600] [--height 64 --width 80] [--epochs 2,2]
"""
from __future__ import annotations

import functools
import shutil
import tempfile
import time
from pathlib import Path

import _common as C


class Meter:
    """Wall time per category, counting only the outermost wrapped call (nested calls are not counted twice)."""

    def __init__(self):
        self.depth = 0
        self.totals: dict[str, float] = {}
        self.marks: dict[str, float] = {}

    def reset(self):
        self.totals, self.marks = {}, {}

    def wrap(self, fn, category: str):
        @functools.wraps(fn)
        def inner(*a, **kw):
            outer = self.depth == 0
            self.depth += 1
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.depth -= 1
                if outer:
                    self.totals[category] = self.totals.get(category, 0.0) + time.perf_counter() - t
        inner.__wrapped_by_bench__ = True
        return inner


def instrument(meter: Meter) -> None:
    import keras
    import mlflow
    import mlflow.tracking.fluent as fluent

    from dermsweep import evaluate, fit, task, tracking

    for name in ("start_run", "end_run", "log_metrics", "log_metric", "log_params", "log_param", "log_text",
                 "log_figure", "log_dict", "set_tag", "set_tags"):
        wrapped = meter.wrap(getattr(mlflow, name), "mlflow")
        setattr(mlflow, name, wrapped)
        if name == "end_run":
            fluent.end_run = wrapped  # ActiveRun.__exit__ calls the fluent module's own end_run
    for name in ("connect", "experiment_id", "log_json", "log_figure", "log_keras_model"):
        setattr(tracking, name, meter.wrap(getattr(tracking, name), "mlflow" if name != "log_keras_model"
                                           else "model_logging"))
    for name in ("plot_confusion", "plot_curves"):
        setattr(evaluate, name, meter.wrap(getattr(evaluate, name), "figures"))
    keras.Model.save_weights = meter.wrap(keras.Model.save_weights, "checkpoint")
    keras.Model.load_weights = meter.wrap(keras.Model.load_weights, "checkpoint")
    task.prepare = meter.wrap(task.prepare, "data")
    task.build = meter.wrap(task.build, "build")

    base = fit._EpochEvaluator

    class TimedEvaluator(base):
        def on_train_batch_begin(self, batch, logs=None):
            meter.marks.setdefault("first_step_begin", time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            meter.marks.setdefault("first_step_end", time.perf_counter())

    fit._EpochEvaluator = TimedEvaluator


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=80)
    p.add_argument("--epochs", default="2,2", help="frozen,finetune epochs per trial")
    p.add_argument("--no-log-model", action="store_true", help="tracking.log_model=false (default: true, as the "
                   "project's default)")
    p.add_argument("--weights", default=C.DEFAULT_WEIGHTS)
    args = p.parse_args(argv)
    frozen_epochs, finetune_epochs = (int(v) for v in args.epochs.split(","))

    import logging

    from hydra import compose, initialize_config_dir

    from dermsweep import task

    logging.getLogger("dermsweep").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="dermsweep-bench-overhead-"))
    meter = Meter()
    instrument(meter)
    start_load = C.load()
    base = [
        "data=ham10000", f"data.root={Path(args.data).resolve()}", f"data.max_images={args.images}",
        "model=mobilenet_v1", "model.alpha=0.25", f"model.weights={Path(args.weights).resolve()}",
        f"model.height={args.height}", f"model.width={args.width}",
        f"trainer.frozen.epochs={frozen_epochs}", f"trainer.finetune.epochs={finetune_epochs}",
        "trainer.verbose=false", f"tracking.log_model={'false' if args.no_log_model else 'true'}",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db", "experiment=bench-trial-overhead", f"cache_dir={tmp}/cache",
    ]
    trials = []
    with initialize_config_dir(config_dir=str(C.ROOT / "conf"), version_base="1.3"):
        for i in range(args.trials):
            overrides = base + [f"trainer.frozen.lr={1e-3 * (1 + i % 3)}", f"model.frozen_fraction={0.5 + 0.1 * (i % 4)}",
                                f"run_name=bench-trial-{i}"]
            cfg = compose(config_name="config", overrides=overrides)
            meter.reset()
            t0 = time.perf_counter()
            value = task.run(cfg)
            total = time.perf_counter() - t0
            m, tot = meter.marks, meter.totals
            tracking_s = sum(tot.get(k, 0.0) for k in ("mlflow", "model_logging", "figures", "checkpoint"))
            row = {
                "trial": i, "objective": value, "total_s": total,
                "to_first_step_begin_s": m["first_step_begin"] - t0, "to_first_step_end_s": m["first_step_end"] - t0,
                "data_s": tot.get("data", 0.0), "build_s": tot.get("build", 0.0),
                "mlflow_s": tot.get("mlflow", 0.0), "model_logging_s": tot.get("model_logging", 0.0),
                "figures_s": tot.get("figures", 0.0), "checkpoint_s": tot.get("checkpoint", 0.0),
                "tracking_s": tracking_s, "tracking_share": tracking_s / total, "load": C.load()["loadavg_1m"],
            }
            trials.append(row)
            print(f"trial {i}: {total:.1f}s, first step begins {row['to_first_step_begin_s']:.2f}s / ends "
                  f"{row['to_first_step_end_s']:.2f}s after launch, tracking {tracking_s:.1f}s "
                  f"({row['tracking_share']:.1%})", flush=True)

    rows = [[r["trial"], f"{r['total_s']:.1f}", f"{r['to_first_step_begin_s']:.2f}", f"{r['to_first_step_end_s']:.2f}",
             f"{r['data_s']:.2f}", f"{r['build_s']:.2f}", f"{r['mlflow_s']:.2f}", f"{r['model_logging_s']:.2f}",
             f"{r['figures_s']:.2f}", f"{r['checkpoint_s']:.2f}", f"{r['tracking_share']:.1%}"] for r in trials]
    print()
    print(C.table(rows, ["trial", "total s", "to 1st step (begin) s", "to 1st step (end) s", "data s", "build s",
                         "mlflow s", "model log s", "figures s", "checkpoint s", "tracking share"]))
    later = trials[1:] or trials
    later_start = C.median([r["to_first_step_begin_s"] for r in later])
    later_end = C.median([r["to_first_step_end_s"] for r in later])
    share = C.median([r["tracking_share"] for r in trials])
    targets = [
        C.target("trial overhead: later trials start training (1st step begins) after launch", "<= 2 s",
                 later_start, later_start <= 2.0, " s"),
        C.target("trial overhead: tracking share of a trial's time (median)", "< 5%", share * 100, share < 0.05,
                 " %"),
    ]
    end_load = C.load()
    print(f"\nlater trials (median): 1st step begins {later_start:.2f}s, done (incl. tracing the train step) "
          f"{later_end:.2f}s after launch")
    print(f"load: start {start_load}, end {end_load}")
    C.print_targets(targets)
    out = {"settings": vars(args), "load_start": start_load, "load_end": end_load, "trials": trials,
           "later_trials_median_to_first_step_begin_s": later_start,
           "later_trials_median_to_first_step_end_s": later_end, "median_tracking_share": share, "targets": targets}
    C.save("trial_overhead", out, args.out)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
