"""The Hydra task: one complete, tracked training run. `train.py` calls `run(cfg)`.

Order matters: everything that can fail on bad input (config, tracking store, data, weights) is checked before an
MLflow run exists, so a mistake costs seconds and leaves no half-made run behind.
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from . import config, evaluate, hardware, provenance, tracking
from . import trial as trial_link
from .data import Prepared, prepare
from .data.pipeline import eval_dataset, training_dataset
from .errors import TrackingError
from .fit import FitResult, fit
from .inference import predict
from .model import build, weights_label
from .weighting import class_weights

log = logging.getLogger("dermsweep")
HEADLINE = ("balanced_accuracy", "macro_f1", "macro_auc", "accuracy")


def run(cfg: DictConfig) -> float | dict[str, float]:
    started = time.perf_counter()
    config.validate(cfg)
    uri = tracking.connect(cfg.tracking)
    provenance.seed_everything(int(cfg.seed))
    hw = hardware.configure(cfg.hardware)
    split_seed = int(cfg.data.split.seed if cfg.data.split.seed is not None else cfg.seed)
    height, width = int(cfg.model.height), int(cfg.model.width)
    data = prepare(cfg.data, height, width, split_seed, cfg.get("cache_dir"))
    with hw.scope():
        model = build(cfg.model, len(data.class_names))
    experiment_id = tracking.experiment_id(cfg.experiment, cfg.tracking)
    link = trial_link.current()
    objectives = config.objectives(cfg)
    objective, direction = objectives[0]

    batch = int(cfg.trainer.batch_size) * hw.replicas
    steps = int(cfg.trainer.steps_per_epoch or math.ceil(len(data.x["train"]) / batch))
    train_ds = training_dataset(
        data.x["train"], data.y["train"], len(data.class_names), batch, cfg.augment, int(cfg.seed), repeat=True
    )
    val_ds = eval_dataset(data.x["val"], batch)
    checkpoint = tracking.local_checkpoint_dir() / "checkpoints" / "best.weights.h5"

    tags = {
        "dermsweep.role": "trial" if trial_link.parent_run_id() else "single",
        "dermsweep.objective_metric": objective,
        "dermsweep.objective_direction": direction,
        "dermsweep.split_id": data.split.split_id,
        "dermsweep.dataset_id": data.dataset_id,
        "dermsweep.status": "running",
        "dermsweep.checkpoint": str(checkpoint),
        **({"mlflow.source.git.commit": g} if (g := provenance.git_state()["git.commit"]) != "unknown" else {}),
        **(link.run_tags if link else {}),
    }
    name = run_name(cfg, link)
    # Started and ended explicitly (not `with`): if the store dies mid-run, ending the run must not replace the
    # error that says where the checkpoint is with a second connection error.
    active = mlflow.start_run(
        experiment_id=experiment_id, run_name=name, parent_run_id=trial_link.parent_run_id(), tags=tags,
        nested=mlflow.active_run() is not None,
    )
    run_id = active.info.run_id
    figures = tracking.BackgroundArtifacts(run_id)
    try:
        if link is not None and hasattr(link, "set_run_id"):
            link.set_run_id(run_id)
        _log_setup(cfg, data, model, hw, steps)

        def on_epoch(epoch: int, phase: str, figures: dict[str, float]) -> None:
            mlflow.log_metrics({k: v for k, v in figures.items() if math.isfinite(v)}, step=epoch)
            log.info(_progress_line(epoch, phase, figures, started))
            if link is not None:
                link.report(epoch, figures[objective])  # raises optuna.TrialPruned when the pruner says so

        result = fit(
            model, train_ds, steps, val_ds, data.y["val"], cfg,
            class_weights(cfg.class_weight, data.y["train"], len(data.class_names)),
            checkpoint, on_epoch, hw.scope,
        )
        final = _evaluate_and_log(cfg, data, model, result, batch, figures)
        values = _objective_values(objectives, final, model)
        if _should_log_model(cfg, link, [values[m] for m, _ in objectives]):
            _log_model(cfg, data, model)
        figures.wait()
        mlflow.set_tag("dermsweep.status", "finished")
    except BaseException as exc:
        figures.abandon()
        _record_failure(exc, run_id, checkpoint)
        raise
    mlflow.end_run("FINISHED")
    log.info(_summary(run_id, name, final, time.perf_counter() - started, uri, experiment_id))
    if len(objectives) == 1:
        return values[objective]
    return values


def run_name(cfg, link=None) -> str:
    if cfg.run_name:
        return str(cfg.run_name)
    m = cfg.model
    parts = [
        m.name.replace("mobilenet_", ""), f"a{m.alpha:g}", f"{m.height}x{m.width}",
        f"ff{m.frozen_fraction:.2g}", cfg.augment.name, cfg.schedule.name, f"cw-{cfg.class_weight.name}",
    ]
    prefix = f"trial-{link.number}-" if link is not None else ""
    return prefix + "-".join(str(p) for p in parts)


def _log_setup(cfg, data: Prepared, model, hw, steps: int) -> None:
    params = tracking.flatten(cfg)
    params.update({
        "data.split_id": data.split.split_id,
        "data.dataset_id": data.dataset_id,
        "data.class_names": ",".join(data.class_names),
        **{f"data.n_{k}": str(v) for k, v in data.split.sizes().items()},
        "data.skipped": str(len(data.problems)),
        "model.weights_source": weights_label(cfg.model.weights),
        "model.params": str(model.count_params()),
        "trainer.steps_per_epoch_used": str(steps),
        **provenance.git_state(),
        **hw.describe(),
    })
    mlflow.log_params(params)
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
    split_table = pd.concat(
        [getattr(data.split, part).assign(split=part) for part in ("train", "val", "test")]
    )[["image_id", "label", "group", "split"]]
    mlflow.log_text(split_table.to_csv(index=False), "data/split.csv")
    mlflow.log_metric("data_skipped", len(data.problems))
    if data.problems:
        mlflow.log_text("\n".join(data.problems) + "\n", "data/problems.txt")
        log.warning("skipped %d problem row(s)/file(s): see data/problems.txt in the run", len(data.problems))


def _evaluate_and_log(cfg, data: Prepared, model, result: FitResult, batch: int,
                      figures: tracking.BackgroundArtifacts) -> dict[str, dict[str, float]]:
    """Best weights are restored: score validation, then test (once, only reported, never used for a choice)."""
    final = {}
    k = len(data.class_names)
    # Queued first: drawn on the figure thread while this thread predicts and scores.
    figures.figure(lambda: evaluate.plot_curves(result.history, result.frozen_epochs_run), "training_curves.png")
    for part in ("val", "test"):
        probs = predict(model, eval_dataset(data.x[part], batch))
        y = data.y[part]
        final[part] = evaluate.scores(y, probs)
        prefix = "final_val" if part == "val" else "test"
        mlflow.log_metrics({f"{prefix}_{m}": v for m, v in final[part].items() if math.isfinite(v)})
        report = evaluate.report(y, probs, data.class_names)
        tracking.log_json(report, f"evaluation/{part}/classification_report.json")
        counts, normalised = evaluate.confusion(y, probs, k)
        tracking.log_json(
            {"class_names": data.class_names, "counts": counts.tolist(), "row_normalised": normalised.tolist()},
            f"evaluation/{part}/confusion_matrix.json",
        )
        figures.figure(lambda c=counts, n=normalised, p=part: evaluate.plot_confusion(c, n, data.class_names, p),
                       f"evaluation/{part}/confusion_matrix.png")
        if part == "test":
            per_class = {}
            for name in data.class_names:
                for stat in ("precision", "recall", "f1-score"):
                    per_class[f"test_{stat.replace('-score', '')}_{name}"] = report[name][stat]
            mlflow.log_metrics(per_class)
    mlflow.log_metrics({"best_epoch": result.best_epoch, "train_seconds": result.seconds,
                        "frozen_layers": result.frozen_layers})
    return final


def _objective_values(objectives, final, model) -> dict[str, float]:
    values = {}
    for metric, _ in objectives:
        if metric.startswith("val_"):
            values[metric] = final["val"][metric.removeprefix("val_")]
        elif metric == "params":
            values[metric] = float(model.count_params())
        elif metric == "latency_ms":
            values[metric] = _latency_ms(model)
            mlflow.log_metric("latency_ms", values[metric])
    return values


def _latency_ms(model, repeats: int = 20) -> float:
    x = np.zeros((1, *model.input_shape[1:]), dtype=np.float32)
    model(x, training=False)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        model(x, training=False)
        times.append(time.perf_counter() - t)
    return float(np.median(times) * 1000)


def _should_log_model(cfg, link, values: list[float]) -> bool:
    mode = config.log_model_mode(cfg)
    if mode != "improving" or link is None:
        return mode != "never"
    if link.improves(values):
        return True
    mlflow.set_tag("dermsweep.model", "not logged: did not beat the sweep's best so far (tracking.log_model=improving)")
    return False


def _log_model(cfg, data: Prepared, model) -> None:
    info = {
        "class_names": data.class_names,
        "input_height": int(cfg.model.height),
        "input_width": int(cfg.model.width),
        "input": "float32 RGB pixels 0-255, shape (N, height, width, 3); the model scales them itself",
        "resize": "PIL bilinear (dermsweep.data.images.load_rgb)",
        "backbone": cfg.model.name,
        "alpha": float(cfg.model.alpha),
        "weights": weights_label(cfg.model.weights),
        "split_id": data.split.split_id,
        "dataset_id": data.dataset_id,
    }
    tracking.log_keras_model(model, data.x["val"][:1].astype(np.float32), info)


def _record_failure(exc: BaseException, run_id: str, checkpoint) -> None:
    """Mark the run pruned (KILLED) or failed (FAILED) with the reason, then let the exception go on."""
    import optuna

    try:
        if isinstance(exc, optuna.TrialPruned):
            mlflow.set_tag("dermsweep.status", "pruned")
            mlflow.end_run("KILLED")
            return
        reason = f"{exc.__class__.__name__}: {exc}"[:5000]
        mlflow.set_tags({"dermsweep.status": "failed", "dermsweep.failure_reason": reason})
        mlflow.end_run("FAILED")
    except Exception as tracking_exc:  # the store itself is gone: say where the work is
        # Forget the run locally: ending it would need the store that just failed.
        stack = mlflow.tracking.fluent._active_run_stack.get()
        if stack and stack[-1].info.run_id == run_id:
            stack.pop()
        where = f"the best weights so far are at {checkpoint}" if Path(checkpoint).exists() else \
            "no checkpoint had been written yet"
        raise TrackingError(
            f"lost the MLflow tracking store during run {run_id} ({tracking_exc.__class__.__name__}: "
            f"{str(tracking_exc)[:300]}); {where}"
        ) from exc


def _progress_line(epoch: int, phase: str, f: dict[str, float], started: float) -> str:
    return (
        f"epoch {epoch:>3} [{phase:<8}] loss {f.get('loss', math.nan):.4f} acc {f.get('accuracy', math.nan):.3f} | "
        f"val loss {f['val_loss']:.4f} bal_acc {f['val_balanced_accuracy']:.3f} f1 {f['val_macro_f1']:.3f} "
        f"auc {f['val_macro_auc']:.3f} | lr {f['lr']:.2e} | {time.perf_counter() - started:.0f}s"
    )


def _summary(run_id, name, final, seconds, uri, experiment_id) -> str:
    def line(part):
        s = final[part]
        return (f"balanced accuracy {s['balanced_accuracy']:.3f}, macro F1 {s['macro_f1']:.3f}, "
                f"AUC {s['macro_auc']:.3f}, accuracy {s['accuracy']:.3f}")

    return (
        f"\nrun {run_id} ({name}) finished in {seconds:.0f}s\n"
        f"  validation: {line('val')}\n"
        f"  test:       {line('test')}\n"
        f"  open it:    {tracking.ui_hint(uri, experiment_id, run_id)}"
    )
