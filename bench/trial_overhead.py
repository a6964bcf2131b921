"""Per-trial overhead: time from a trial's launch to its first training step, and its share spent on tracking.

Runs --trials trials in ONE process, as a sweep does: each trial's config is composed with Hydra's compose API
(conf/, the same overrides a sweep gives) and handed to dermsweep.training.task.run as a trial of an in-memory Optuna
study (asked and told like the sweeper does, linked through the same environment), so later trials reuse the in-process
caches and tracking.log_model=improving (the default) applies as in a real sweep: only trials that beat the best so
far save their model. Nothing in the product is changed: the benchmark wraps PUBLIC functions, found by their home
module and replaced wherever a dermsweep module imported them (a seam that moves stops the benchmark with a message
naming it, instead of measuring nothing); only time on the trial's own thread counts:

  launch         task.run is called
  data / build   dermsweep.data.prepare, dermsweep.training.model.build
  first step     a callback added to every keras Model.fit (begin: the step is about to run; end: it ran, which
                 includes tracing Keras' train function for the fresh model)
  tracking       mlflow's fluent calls (start/end run, params, metrics, texts, figures, artifacts), every public
                 function of dermsweep.tracking (connect, experiment lookup, splits, run ownership...) with
                 log_keras_model (saving the model to MLflow) in its own column, the public methods of
                 BackgroundArtifacts (queueing figures, waiting for the worker thread that draws and logs them),
                 and weight file saves/loads (keras Model.save_weights/load_weights)

Not included: what a Hydra sweeper does between trials (ask Optuna, compose, job folder); see sweep_efficiency.

    python bench/trial_overhead.py [--trials 4] [--images 600] [--height 64 --width 80] [--epochs 2,2]
"""

from __future__ import annotations

import functools
import importlib
import inspect
import pkgutil
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common as C


class Meter:
    """Wall time per category on the trial's own thread, counting only the outermost wrapped call (nested calls are
    not counted twice; calls on the figure thread overlap the trial and are not its time)."""

    def __init__(self):
        self.local = threading.local()
        self.thread = threading.get_ident()
        self.totals: dict[str, float] = {}
        self.marks: dict[str, float] = {}

    def reset(self):
        self.thread = threading.get_ident()
        self.totals, self.marks = {}, {}

    def wrap(self, fn, category: str):
        @functools.wraps(fn)
        def inner(*a, **kw):
            depth = getattr(self.local, "depth", 0)
            outer = depth == 0 and threading.get_ident() == self.thread
            self.local.depth = depth + 1
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.local.depth = depth
                if outer:
                    self.totals[category] = self.totals.get(category, 0.0) + time.perf_counter() - t

        inner.__wrapped_by_bench__ = True  # type: ignore[attr-defined]
        return inner


class SeamMoved(RuntimeError):
    """A public function the benchmark times is no longer where it was, or no longer called through a module."""


def rebind(original, replacement) -> int:
    """Point every module-level name bound to `original` in the loaded dermsweep modules at `replacement` (a
    `from x import f` copies the reference, so patching x.f alone misses the importers). Returns how many."""
    count = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "dermsweep" or name.startswith("dermsweep.")):
            continue
        for attr, value in list(vars(module).items()):
            if value is original:
                setattr(module, attr, replacement)
                count += 1
    return count


def public_functions(package: str):
    """(module, name, function) for every public function defined in the modules of `package`."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__, package + "."):
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if inspect.isfunction(value) and value.__module__ == info.name and not name.startswith("_"):
                yield module, name, value


# Public seams, by their home module: nothing private is patched, and a seam that moves fails loudly (SeamMoved).
TRACKING_PACKAGE = "dermsweep.tracking"  # every public function in it counts as tracking
MODEL_LOGGING = ("dermsweep.tracking.model_log", "log_keras_model")  # ... except saving the model: its own column
DATA = ("dermsweep.data", "prepare")
BUILD = ("dermsweep.training.model", "build")
MLFLOW_CALLS = (
    "start_run",
    "end_run",
    "log_metrics",
    "log_metric",
    "log_params",
    "log_param",
    "log_text",
    "log_figure",
    "log_dict",
    "log_artifact",
    "log_artifacts",
    "log_input",
    "set_tag",
    "set_tags",
)


def _timed(meter: Meter, home: tuple[str, str], category: str) -> None:
    module = importlib.import_module(home[0])
    original = getattr(module, home[1], None)
    if original is None:
        raise SeamMoved(f"{home[0]}.{home[1]} is gone: update bench/trial_overhead.py's seams")
    wrapped = meter.wrap(original, category)
    if not rebind(original, wrapped):
        raise SeamMoved(f"{home[0]}.{home[1]} is not referenced by any loaded dermsweep module")


def instrument(meter: Meter) -> None:
    """Wrap the public seams: mlflow's fluent API, dermsweep.tracking's functions and BackgroundArtifacts' methods,
    keras' weight files, data preparation, model building, and a callback added to every keras Model.fit."""
    import keras
    import mlflow
    import mlflow.tracking.fluent as fluent

    import dermsweep.training.task  # noqa: F401  (loads every module the trial uses, so rebind finds them)
    from dermsweep.tracking.artifacts import BackgroundArtifacts

    for name in MLFLOW_CALLS:
        wrapped = meter.wrap(getattr(mlflow, name), "mlflow")
        setattr(mlflow, name, wrapped)
        if name == "end_run":
            fluent.end_run = wrapped  # ActiveRun.__exit__ calls the fluent module's own end_run
    for module, name, fn in list(public_functions(TRACKING_PACKAGE)):
        if (module.__name__, name) != MODEL_LOGGING:
            rebind(fn, meter.wrap(fn, "mlflow"))
    _timed(meter, MODEL_LOGGING, "model_logging")
    # Figures are drawn and logged on a worker thread; the trial pays only for queueing and for waiting on them.
    for name, fn in list(vars(BackgroundArtifacts).items()):
        if inspect.isfunction(fn) and not name.startswith("_"):
            setattr(BackgroundArtifacts, name, meter.wrap(fn, "figures"))
    keras.Model.save_weights = meter.wrap(keras.Model.save_weights, "checkpoint")
    keras.Model.load_weights = meter.wrap(keras.Model.load_weights, "checkpoint")
    _timed(meter, DATA, "data")
    _timed(meter, BUILD, "build")

    class FirstStep(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            meter.marks.setdefault("first_step_begin", time.perf_counter())

        def on_train_batch_end(self, batch, logs=None):
            meter.marks.setdefault("first_step_end", time.perf_counter())

    plain_fit = keras.Model.fit

    @functools.wraps(plain_fit)
    def fit(self, *args, callbacks=None, **kwargs):
        return plain_fit(self, *args, callbacks=[*(callbacks or []), FirstStep()], **kwargs)

    keras.Model.fit = fit  # type: ignore[method-assign]


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=80)
    p.add_argument("--epochs", default="2,2", help="frozen,finetune epochs per trial")
    C.add_log_model_option(p)
    p.add_argument("--weights", default=C.DEFAULT_WEIGHTS)
    args = p.parse_args(argv)
    C.shrink(args, "trial_overhead", trials=2, images=168, height=32, width=40, epochs="1,1")
    frozen_epochs, finetune_epochs = (int(v) for v in args.epochs.split(","))

    import logging
    import os

    import optuna
    from hydra import compose, initialize_config_dir

    from dermsweep.sweep import trial_link
    from dermsweep.training import task

    logging.getLogger("dermsweep").setLevel(logging.WARNING)
    tmp = Path(tempfile.mkdtemp(prefix="dermsweep-bench-overhead-"))
    meter = Meter()
    instrument(meter)
    start_load = C.load()
    base = [
        "data=ham10000",
        f"data.root={Path(args.data).resolve()}",
        f"data.max_images={args.images}",
        "model=mobilenet_v1",
        "model.alpha=0.25",
        f"model.weights={C.weights_override(args.weights)}",
        f"model.height={args.height}",
        f"model.width={args.width}",
        f"trainer.frozen.epochs={frozen_epochs}",
        f"trainer.finetune.epochs={finetune_epochs}",
        "trainer.verbose=false",
        f"tracking.log_model={args.log_model}",
        f"tracking.uri=sqlite:///{tmp}/mlflow.db",
        "experiment=bench-trial-overhead",
        f"cache_dir={tmp}/cache",
    ]
    trials = []
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name="bench-trial-overhead", direction="maximize", pruner=optuna.pruners.NopPruner()
    )  # every trial runs whole: comparable rows
    trial_link.register_local_study(study)
    with initialize_config_dir(config_dir=str(C.ROOT / "conf"), version_base="1.3"):
        for i in range(args.trials):
            overrides = base + [
                f"trainer.frozen.lr={1e-3 * (1 + i % 3)}",
                f"model.frozen_fraction={0.5 + 0.1 * (i % 4)}",
                f"run_name=bench-trial-{i}",
            ]
            cfg = compose(config_name="config", overrides=overrides)
            asked = study.ask()
            env = trial_link.job_env(study.study_name, None, asked._trial_id, asked.number, None)
            os.environ.update(env)
            meter.reset()
            t0 = time.perf_counter()
            value = task.run(cfg)
            total = time.perf_counter() - t0
            for k in env:
                del os.environ[k]
            study.tell(asked, value)
            m, tot = meter.marks, meter.totals
            tracking_s = sum(tot.get(k, 0.0) for k in ("mlflow", "model_logging", "figures", "checkpoint"))
            row = {
                "trial": i,
                "objective": value,
                "total_s": total,
                "to_first_step_begin_s": m["first_step_begin"] - t0,
                "to_first_step_end_s": m["first_step_end"] - t0,
                "data_s": tot.get("data", 0.0),
                "build_s": tot.get("build", 0.0),
                "mlflow_s": tot.get("mlflow", 0.0),
                "model_logging_s": tot.get("model_logging", 0.0),
                "figures_s": tot.get("figures", 0.0),
                "checkpoint_s": tot.get("checkpoint", 0.0),
                "tracking_s": tracking_s,
                "tracking_share": tracking_s / total,
                "load": C.load()["loadavg_1m"],
                "model_logged": tot.get("model_logging", 0.0) > 0,
            }
            trials.append(row)
            print(
                f"trial {i}: {total:.1f}s, first step begins {row['to_first_step_begin_s']:.2f}s / ends "
                f"{row['to_first_step_end_s']:.2f}s after launch, tracking {tracking_s:.1f}s "
                f"({row['tracking_share']:.1%})",
                flush=True,
            )

    rows = [
        [
            r["trial"],
            f"{r['total_s']:.1f}",
            f"{r['to_first_step_begin_s']:.2f}",
            f"{r['to_first_step_end_s']:.2f}",
            f"{r['data_s']:.2f}",
            f"{r['build_s']:.2f}",
            f"{r['mlflow_s']:.2f}",
            f"{r['model_logging_s']:.2f}",
            f"{r['figures_s']:.2f}",
            f"{r['checkpoint_s']:.2f}",
            f"{r['tracking_share']:.1%}",
            "yes" if r["model_logged"] else "no",
        ]
        for r in trials
    ]
    print()
    print(
        C.table(
            rows,
            [
                "trial",
                "total s",
                "to 1st step (begin) s",
                "to 1st step (end) s",
                "data s",
                "build s",
                "mlflow s",
                "model log s",
                "figures s",
                "checkpoint s",
                "tracking share",
                "model logged",
            ],
        )
    )
    later = trials[1:] or trials
    later_start = C.median([r["to_first_step_begin_s"] for r in later])
    later_end = C.median([r["to_first_step_end_s"] for r in later])
    share = C.median([r["tracking_share"] for r in trials])
    sweep_share = sum(r["tracking_s"] for r in trials) / sum(r["total_s"] for r in trials)
    with_model = [r["tracking_share"] for r in trials if r["model_logged"]]
    without_model = [r["tracking_share"] for r in trials if not r["model_logged"]]
    targets = [
        C.target(
            "trial overhead: later trials start training (1st step begins) after launch",
            "<= 2 s",
            later_start,
            later_start <= 2.0,
            " s",
        ),
        C.target("trial overhead: tracking share of a trial's time (median)", "< 5%", share * 100, share < 0.05, " %"),
    ]
    end_load = C.load()
    print(
        f"\nlater trials (median): 1st step begins {later_start:.2f}s, done (incl. tracing the train step) "
        f"{later_end:.2f}s after launch"
    )
    print(
        f"tracking share: median {share:.1%}; whole run {sweep_share:.1%}; trials that saved a model "
        f"{C.median(with_model) if with_model else float('nan'):.1%} (median of {len(with_model)}), trials that "
        f"did not {C.median(without_model) if without_model else float('nan'):.1%} (median of {len(without_model)})"
    )
    print(f"load: start {start_load}, end {end_load}")
    C.print_targets(targets)
    out = {
        "settings": vars(args),
        "load_start": start_load,
        "load_end": end_load,
        "trials": trials,
        "later_trials_median_to_first_step_begin_s": later_start,
        "later_trials_median_to_first_step_end_s": later_end,
        "median_tracking_share": share,
        "whole_run_tracking_share": sweep_share,
        "tracking_share_with_model": with_model,
        "tracking_share_without_model": without_model,
        "targets": targets,
    }
    C.save("trial_overhead", out, args.out)
    shutil.rmtree(tmp, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
