"""One complete, tracked training run: a single run, a sweep's trial, or one fold of a cross-validation
(training/cross_validation.py). `train(cfg)` returns what the run made; training/task.py is the Hydra task.

Order matters: everything that can fail on bad input (config, tracking store, data, weights) is checked before an
MLflow run exists, so a mistake costs seconds and leaves no half-made run behind.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ..data import Prepared, prepare
from ..data.pipeline import eval_dataset, training_dataset
from ..evaluation import plots
from ..sweep import trial_link
from ..timing import median_latency_ms
from ..tracking import run_format as rf
from ..tracking.artifacts import BackgroundArtifacts, flatten, log_splits
from ..tracking.model_log import log_keras_model, log_model_or_explain, save_checkpoint
from ..tracking.recorded_run import recorded_run
from ..tracking.stop_signal import stop_reason
from ..tracking.store import connect, ensure_experiment, local_checkpoint_dir, ui_hint
from . import config, determinism, distillation, hardware, progress, provenance
from .backbones import BACKBONES
from .class_weights import class_weights
from .fit import FitPlan, FitResult, fit
from .model import build, weights_label
from .ship import Shipping, ship
from .ship_record import log_gains, log_scores, log_view_logits

log = logging.getLogger("dermsweep")


@dataclass
class Trained:
    """What one run made: its run id, the trained classifier (best weights), the shipped model and its scores."""

    run_id: str
    name: str
    classifier: keras.Model
    shipping: Shipping
    final: dict[str, dict[str, float]]  # "val" / "test" -> metric -> value (the shipped model)
    values: dict[str, float]  # objective metric -> value
    class_names: list[str]
    dataset_id: str
    y: dict[str, np.ndarray]  # "val" / "test" -> class indices
    split_id: str
    test_images: np.ndarray  # uint8 (n, h, w, 3): a cross-validation scores its bag on them
    teacher: dict  # a distilled run's teacher (Teaching.to_meta); {} without one


def start_up(cfg: DictConfig) -> tuple[hardware.Hardware, Prepared]:
    """Seeds, determinism (before the backend first runs anything), devices and the prepared data: what every run
    needs before it builds a model; also what a resumed cross-validation's kept folds are rebuilt on."""
    provenance.seed_everything(int(cfg.seed))
    determinism.configure(bool(cfg.trainer.deterministic), str(cfg.hardware.backend))
    hw = hardware.configure(cfg.hardware, cfg.get("cache_dir"))
    return hw, prepare(
        cfg.data, int(cfg.model.height), int(cfg.model.width), config.split_seed(cfg), cfg.get("cache_dir")
    )


class Standalone:
    """Marker default: take the sweep link and parent run from the environment (trial_link)."""


FROM_SWEEP = Standalone()


def train(
    cfg: DictConfig,
    *,
    role: str | None = None,
    parent_run_id: str | None | Standalone = FROM_SWEEP,
    link: trial_link.TrialLink | None | Standalone = FROM_SWEEP,
    may_log_model: bool = True,
    attempt: int = 0,
) -> Trained:
    """Train, ship and record one run. A cross-validation passes its own parent run and role ("fold") and no link:
    a fold neither reports epochs to the sweep's pruner nor logs a model of its own; `attempt` > 0 when it trains a
    weak fold again (its own weights file and tag)."""
    started = time.perf_counter()
    client = connect(str(cfg.tracking.uri))
    uri = str(client.tracking_uri)
    hw, data = start_up(cfg)
    with hw.scope():
        model = build(cfg.model, len(data.class_names))
    experiment_id = ensure_experiment(client, str(cfg.experiment), cfg.tracking.get("artifact_root"))
    link = trial_link.current() if isinstance(link, Standalone) else link
    parent_id = trial_link.parent_run_id() if isinstance(parent_run_id, Standalone) else parent_run_id
    objectives = config.objectives(cfg)
    objective, direction = objectives[0]

    batch = int(cfg.trainer.batch_size) * hw.replicas
    steps = int(cfg.trainer.steps_per_epoch or math.ceil(len(data.x["train"]) / batch))
    class_weight = class_weights(cfg.class_weight, data.y["train"], len(data.class_names))
    # A missing teacher fails here, before the run exists; its logits are cached for later runs.
    teaching = distillation.teach(cfg, data, class_weight, client, batch) if distillation.requested(cfg) else None
    train_ds = training_dataset(
        data.x["train"],
        data.y["train"],
        len(data.class_names),
        batch,
        cfg.augment,
        int(cfg.seed),
        steps,
        hw.data_workers,
        bool(cfg.trainer.deterministic),
        targets=teaching.targets if teaching else None,
        weights=teaching.weights if teaching else None,
    )
    val_ds = eval_dataset(data.x["val"], batch)
    checkpoint = local_checkpoint_dir() / "checkpoints" / checkpoint_name(cfg, attempt)

    tags = {
        **run_tags(objective, direction, hw.backend, link, provenance.git_state()),
        rf.SPLIT_ID: data.split.split_id,
        rf.DATASET_ID: data.dataset_id,
        rf.CHECKPOINT: str(checkpoint),
        **({rf.CV_FOLDS: str(cfg.data.split.folds), rf.FOLD: str(cfg.data.split.fold)} if _is_fold(cfg) else {}),
        **(teaching.tags() if teaching else {}),
        **({rf.FOLD_ATTEMPT: str(attempt)} if attempt else {}),
    }
    name = run_name(cfg, link)
    role = role or ("trial" if parent_id else "single")
    with recorded_run(
        client, experiment_id, name, role, tags=tags, parent_run_id=parent_id, kept=lambda: _kept(checkpoint)
    ) as recorded:
        run_id = recorded.run_id
        figures = BackgroundArtifacts(run_id)
        try:
            if link is not None:
                link.set_run_id(run_id)
            _log_setup(cfg, data, model, hw, steps)
            if teaching:
                mlflow.log_params(teaching.params())
                mlflow.log_metric(rf.metric(rf.RUN, "teacher_train_agreement"), teaching.train_agreement)

            last_epoch = int(cfg.trainer.frozen.epochs) + int(cfg.trainer.finetune.epochs)

            def on_epoch(epoch: int, phase: str, figures: dict[str, float]) -> None:
                mlflow.log_metrics(epoch_metrics(figures), step=epoch)
                log.info(progress.epoch_line(epoch, last_epoch, phase, figures, objective, started))
                if link is not None:  # raises optuna.TrialPruned when the pruner says so (never after the last epoch)
                    link.report(epoch, figures[objective], prunable=epoch < last_epoch)

            result = fit(
                model,
                train_ds,
                steps,
                val_ds,
                data.y["val"],
                FitPlan.of(cfg),
                class_weight if teaching is None else None,  # a distilled run's weights travel with its batches
                checkpoint,
                on_epoch,
                hw.scope,
            )
            shipping = ship(cfg, data, model, batch, objective)
            final = _evaluate_and_log(data, shipping, result, figures)
            values = objective_values(objectives, final, shipping.model)
            log_model = may_log_model and should_log_model(cfg, link, [values[m] for m, _ in objectives])
            # the weights on disk first: logging the model is the largest write, the one a full disk stops; a fold
            # keeps its classifier as its cross-validation bags it, so a stopped CV resumes from it
            if log_model or _is_fold(cfg):
                save_checkpoint(model, checkpoint)
            if _is_fold(cfg):  # also beside its records: a CV resumed on another machine that shares the store
                log_model_or_explain(
                    lambda: mlflow.log_artifact(str(checkpoint), rf.FOLD_WEIGHTS_DIR),
                    checkpoint,
                    "the fold's weights",
                    "resume the cross-validation: train.py resume=<its run id>",
                )
            if log_model:
                log_model_or_explain(lambda: _log_model(cfg, data, shipping, teaching), checkpoint)
            figures.wait()
        except BaseException as exc:
            figures.abandon()
            if isinstance(exc, KeyboardInterrupt):  # Ctrl-C or SIGTERM: say where the work is before it ends
                log.warning("%s: run %s ends KILLED; %s", stop_reason(exc), run_id, _kept(checkpoint))
            raise
        recorded.finish(_description(name, final, result) + (f"; {teaching.summary(cfg)}" if teaching else ""))
    if role == "fold":  # its cross-validation prints one line per fold and the summary
        log.info("%s finished in %.0fs: validation %s", name, time.perf_counter() - started, _scores_line(final["val"]))
    else:
        log.info(_summary(run_id, name, final, time.perf_counter() - started, uri, experiment_id))
    return Trained(
        run_id,
        name,
        model,
        shipping,
        final,
        values,
        data.class_names,
        data.dataset_id,
        {part: data.y[part] for part in ("val", "test")},
        data.split.split_id,
        data.x["test"],
        teaching.to_meta(cfg) if teaching else {},
    )


def run_tags(objective: str, direction: str, backend: str, link, git: dict[str, str]) -> dict[str, str]:
    """The tags every training run starts with (a single run, a trial, a fold, a cross-validation's parent)."""
    commit = git["git.commit"]
    return {
        rf.OBJECTIVE_METRIC: objective,
        rf.OBJECTIVE_DIRECTION: direction,
        rf.BACKEND: backend,
        **({rf.GIT_COMMIT: commit} if commit != "unknown" else {}),
        **(link.run_tags if link else {}),
    }


def checkpoint_name(cfg, attempt: int = 0) -> str:
    """The weights file in the job's checkpoints/ folder: a cross-validation's folds each keep their own, and a
    fold trained again keeps the weak model's file beside its own."""
    if _is_fold(cfg):
        retry = f"-retry{attempt}" if attempt else ""
        return f"fold{int(cfg.data.split.fold) + 1}of{int(cfg.data.split.folds)}{retry}.weights.h5"
    return "best.weights.h5"


def _is_fold(cfg) -> bool:
    return cfg.data.split.get("folds") is not None and cfg.data.split.get("fold") is not None


def run_name(cfg, link=None) -> str:
    if cfg.run_name:
        return str(cfg.run_name)
    m = cfg.model
    parts = [
        BACKBONES.get(m.name).label(m),
        f"{m.height}x{m.width}",
        f"ff{m.frozen_fraction:.2g}",
        *([f"sog{float(m.shades_of_gray):g}"] if m.get("shades_of_gray") else []),
        cfg.augment.name,
        cfg.schedule.name,
        f"cw-{cfg.class_weight.name}",
    ]
    prefix = f"trial-{link.number}-" if link is not None else ""
    return prefix + "-".join(str(p) for p in parts)


def epoch_metrics(figures: dict[str, float]) -> dict[str, float]:
    """One epoch's figures under their MLflow names (rf.epoch_metric). Non-finite values are left out (MLflow
    refuses NaN)."""
    return {rf.epoch_metric(key): value for key, value in figures.items() if math.isfinite(value)}


def _log_setup(cfg, data: Prepared, model, hw, steps: int) -> None:
    params = flatten(cfg)
    params.update(
        {
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
        }
    )
    mlflow.log_params(params)
    mlflow.log_text(OmegaConf.to_yaml(cfg, resolve=True), rf.CONFIG)
    parts = {"train": data.split.train, "validation": data.split.val, "test": data.split.test}
    split_table = pd.concat([t.assign(split=p) for p, t in parts.items()])[["image_id", "label", "group", "split"]]
    mlflow.log_text(split_table.to_csv(index=False), rf.SPLIT_TABLE)
    log_splits(
        {p: t[["image_id", "label", "group"]] for p, t in parts.items()},
        data.catalog.source,
        data.split.split_id,
        str(cfg.data.get("root") or data.catalog.source),
    )
    mlflow.log_metric(rf.metric(rf.RUN, "data_skipped"), len(data.problems))
    if data.problems:
        mlflow.log_text("\n".join(data.problems) + "\n", rf.DATA_PROBLEMS)
        log.warning("skipped %d problem row(s)/file(s): see %s in the run", len(data.problems), rf.DATA_PROBLEMS)


def _evaluate_and_log(
    data: Prepared, shipping: Shipping, result: FitResult, figures: BackgroundArtifacts
) -> dict[str, dict[str, float]]:
    """Curves, the shipped model's scores and gains, its view logits, and the run's bookkeeping."""
    # Queued first: drawn on the figure thread while this thread scores.
    figures.figure(lambda: plots.plot_curves(result.history, result.frozen_epochs_run), rf.TRAINING_CURVES)
    final = log_scores(data.y, data.class_names, shipping, figures)
    log_gains(data.y, data.class_names, shipping, figures)
    log_view_logits(shipping, {part: data.y[part] for part in ("val", "test")})
    mlflow.log_metrics(
        {
            rf.metric(rf.RUN, "best_epoch"): result.best_epoch,
            rf.metric(rf.RUN, "train_seconds"): result.seconds,
            rf.metric(rf.RUN, "frozen_layers"): result.frozen_layers,
            rf.metric(rf.RUN, "shipping_seconds"): shipping.seconds,
        }
    )
    return final


def objective_values(objectives, final, model) -> dict[str, float]:
    values = {}
    for metric, _ in objectives:
        if metric.startswith("val_"):
            values[metric] = final["val"][metric.removeprefix("val_")]
        elif metric == "params":
            values[metric] = float(model.count_params())
        elif metric == "latency_ms":
            x = np.zeros((1, *model.input_shape[1:]), dtype=np.float32)
            values[metric] = median_latency_ms(lambda batch: model(batch, training=False), x)
        if not metric.startswith("val_"):
            mlflow.log_metric(rf.final_metric(metric), values[metric])
    return values


def should_log_model(cfg, link, values: list[float]) -> bool:
    mode = config.log_model_mode(cfg)
    if mode != "improving" or link is None:
        return mode != "never"
    if link.improves(values):
        return True
    mlflow.set_tag(rf.MODEL_NOTE, "not logged: did not beat the sweep's best so far (tracking.log_model=improving)")
    return False


def _log_model(cfg, data: Prepared, shipping: Shipping, teaching: distillation.Teaching | None) -> None:
    info = model_info(cfg, data.class_names, data.split.split_id, data.dataset_id, shipping)
    if teaching:
        info.update(teaching.to_meta(cfg))
    log_keras_model(shipping.model, data.x["val"][:1].astype(np.float32), info)


def model_info(cfg, class_names: list[str], split_id: str, dataset_id: str, shipping: Shipping) -> dict:
    """The logged model's metadata (predict, the model card, the web page and the REST endpoint read it)."""
    from ..data.sources.ham10000 import FULL_NAMES

    return {
        "class_names": class_names,
        "full_names": {c: FULL_NAMES.get(c, c) for c in class_names},
        "input_height": int(cfg.model.height),
        "input_width": int(cfg.model.width),
        "input": "float32 RGB pixels 0-255, shape (N, height, width, 3); the model scales them itself",
        "resize": "PIL bilinear (dermsweep.data.images.load_rgb)",
        **BACKBONES.get(cfg.model.name).describe(cfg.model),
        "weights": weights_label(cfg.model.weights),
        "split_id": split_id,
        "dataset_id": dataset_id,
        **shipping.gains.to_meta(),
    }


def _kept(checkpoint: Path) -> str:
    """Where the run's work is, for an error that could not be recorded in the store."""
    if Path(checkpoint).exists():
        return f"the best weights so far are at {checkpoint}"
    return "no checkpoint had been written yet"


def _scores_line(s: dict[str, float]) -> str:
    return (
        f"balanced accuracy {s['balanced_accuracy']:.3f}, macro F1 {s['macro_f1']:.3f}, "
        f"AUC {s['macro_auc']:.3f}, accuracy {s['accuracy']:.3f}"
    )


def _description(name: str, final, result: FitResult) -> str:
    return (
        f"{name}: validation {_scores_line(final['val'])}; test {_scores_line(final['test'])}; "
        f"best epoch {result.best_epoch}, {result.seconds:.0f} s of training"
    )


def _summary(run_id, name, final, seconds, uri, experiment_id) -> str:
    return (
        f"\nrun {run_id} ({name}) finished in {seconds:.0f}s\n"
        f"  validation: {_scores_line(final['val'])}\n"
        f"  test:       {_scores_line(final['test'])}\n"
        f"  open it:    {ui_hint(uri, experiment_id, run_id)}"
    )
