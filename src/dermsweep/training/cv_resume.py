"""Resuming a stopped cross-validation (`resume=<its run id>`): the folds it finished are kept, the rest trained.

A 5-fold CV of the shipped recipe is hours on a CPU; Ctrl-C, SIGTERM, a full disk or a lost machine should not
cost the folds already done. Each fold run keeps its shipped weights on disk (its checkpoint tag names the file)
and logs its out-of-fold and test logits, so a finished fold is rebuilt from those two without training: the same
seeds give the same remaining folds and so the same bag as a CV that never stopped.

Everything is checked, and every kept fold rebuilt, before the parent run is reopened: the run is a cross-validation
that did not finish and is not running, the config is the one it started with, the data is the same, and each kept
fold's weights reproduce its logged predictions (a fold whose weights or records are gone or changed is trained
again, and the log says why). A failed check leaves the stopped run as it was.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from ..errors import ConfigError, DataError
from ..evaluation.bootstrap import Interval
from ..tracking import run_format as rf
from ..tracking import run_owner
from ..tracking.artifacts import flatten
from ..tracking.store import first_line
from . import distillation, provenance
from .gains import Gains, per_view
from .model import build
from .ship import Shipping, view_logits
from .ship_record import read_view_logits
from .single_run import Trained, start_up

log = logging.getLogger("dermsweep")

# Settings that may differ between the stopped run and its resumption: they change neither the folds nor the models
# (where the store, cache and files are on this machine; the data itself is checked by its identity).
MAY_DIFFER = ("resume", "run_name", "verbose", "tracking.", "cache_dir", "paths.", "data.root")
# A kept fold predicts its first validation batch again: its logits must match what it logged, within this share of
# their size: float32 repeats to ~1e-6 on one machine; float16/bfloat16 compute (mixed precision) keeps ~3 digits.
CHECK_TOLERANCE = {"float32": 1e-3, "mixed": 5e-2}


@dataclass
class Resumption:
    run_id: str
    name: str  # the parent's run name: fold runs trained now are named like the kept ones
    kept: dict[int, Any] = field(default_factory=dict)  # fold index -> its FINISHED fold run (mlflow Run)
    previous_end: str = ""  # how the parent ended before (its status and reason), recorded on the resumed run
    commit_note: str = ""  # when the code changed since: which commit trained which folds


def find(client, cfg: DictConfig, in_sweep: bool) -> Resumption:
    """The stopped cross-validation `cfg.resume` names and its finished folds; ConfigError when it cannot resume."""
    run_id = str(cfg.resume)
    if in_sweep:
        raise ConfigError(f"resume={run_id}: resumes one cross-validation; a sweep's trials cannot resume")
    try:
        parent = client.get_run(run_id)
    except Exception as exc:
        raise ConfigError(
            f"resume={run_id}: no such run in {client.tracking_uri} ({first_line(exc)}); "
            "give the run id of the stopped cross-validation (`dermsweep runs`)"
        ) from exc
    tags = parent.data.tags
    if parent.info.lifecycle_stage == "deleted":
        raise ConfigError(
            f"resume={run_id}: that run is deleted; restore it first (`mlflow runs restore`) or start anew"
        )
    if tags.get(rf.ROLE) != "cv":
        raise ConfigError(
            f"resume={run_id}: run {tags.get('mlflow.runName', run_id)} is a {tags.get(rf.ROLE, 'non-dermsweep')} run, "
            "not a cross-validation; resume continues a stopped `data.split.folds=k` run"
        )
    status = parent.info.status
    if status == "FINISHED":
        raise ConfigError(f"resume={run_id}: that cross-validation already finished; nothing is left to train")
    if status == "RUNNING" and run_owner.death(tags) is None:
        raise ConfigError(
            f"resume={run_id}: that cross-validation is still running (or its process cannot be checked from here); "
            "stop it first, or wait for it to finish"
        )
    if not parent.data.params:
        raise ConfigError(f"resume={run_id}: that run recorded no settings to check against; start a new run")
    _same_config(cfg, parent.data.params, run_id)
    if distillation.requested(cfg):
        raise ConfigError(f"resume={run_id}: resuming a distilled cross-validation is not supported; run it again")
    folds = int(cfg.data.split.folds)
    kept: dict[int, Any] = {}
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time ASC"],
    )
    for child in children:
        fold = child.data.tags.get(rf.FOLD)
        if child.data.tags.get(rf.ROLE) == "fold" and fold is not None and 0 <= int(fold) < folds:
            kept[int(fold)] = child  # the latest finished run of each fold
    reason = tags.get(rf.FAILURE_REASON, "")
    return Resumption(
        run_id,
        tags.get("mlflow.runName", run_id),
        kept,
        previous_end=f"{status}: {reason}" if reason else status,
        commit_note=_commits(kept),
    )


def _same_config(cfg: DictConfig, logged: dict[str, str], run_id: str) -> None:
    """The resumed run must be the stopped one: every setting it logged, the same now (MAY_DIFFER aside)."""
    now = flatten(cfg)
    differ = [
        f"{k}: {logged[k]} then, {now[k]} now"
        for k in sorted(now)
        if k in logged and not k.startswith(MAY_DIFFER) and logged[k] != now[k]
    ]
    if differ:
        raise ConfigError(
            f"resume={run_id}: the config differs from the stopped cross-validation's ({'; '.join(differ[:8])}"
            f"{'; ...' if len(differ) > 8 else ''}); resume it with the same settings, or start a new run"
        )
    new = [k for k in now if k not in logged and not k.startswith(MAY_DIFFER)]
    if new:
        log.warning("resume: settings the stopped run did not log (newer code), taken as now: %s", ", ".join(new))


def _commits(kept: dict[int, Any]) -> str:
    """Which commit trained which folds, when the code changed since the kept folds were trained; else ""."""
    now = provenance.git_state().get("git.commit", "unknown")
    by_commit: dict[str, list[int]] = {}
    for fold, fold_run in sorted(kept.items()):
        by_commit.setdefault(fold_run.data.tags.get(rf.GIT_COMMIT, "unknown"), []).append(fold + 1)
    if set(by_commit) <= {now} or now == "unknown":
        return ""
    parts = [f"fold {', '.join(map(str, folds))} at {commit[:10]}" for commit, folds in by_commit.items()]
    note = f"{'; '.join(parts)}; folds trained now at {now[:10]}"
    log.warning("resume: the code changed since the kept folds were trained: %s", note)
    return note


def restore(cfg: DictConfig, fold_run, objectives) -> Trained | None:
    """A finished fold rebuilt from its weights file and its logged logits, or None (with the reason logged) when
    its weights or records are missing or do not reproduce what it logged: that fold is then trained again.
    Raises DataError when the data is no longer the data it was trained on."""
    try:
        return _rebuild(cfg, fold_run, objectives)
    except _TrainAgain as why:
        log.warning("resume: fold %d %s: training it again", int(fold_run.data.tags[rf.FOLD]) + 1, why)
        return None


class _TrainAgain(Exception):
    """Why a finished fold cannot be kept."""


def _rebuild(cfg: DictConfig, fold_run, objectives) -> Trained:
    import mlflow

    tags, fold = fold_run.data.tags, int(fold_run.data.tags[rf.FOLD])
    metrics = fold_run.data.metrics

    missing = [m for m, _ in objectives if rf.final_metric(m) not in metrics]
    if missing or "test/balanced_accuracy" not in metrics:
        raise _TrainAgain(f"did not record {', '.join(missing) or 'its test scores'}")
    try:
        logged = read_view_logits(mlflow.MlflowClient().download_artifacts(fold_run.info.run_id, rf.VIEW_LOGITS))
    except Exception as exc:
        raise _TrainAgain(f"has no readable {rf.VIEW_LOGITS} ({first_line(exc)})") from exc
    hw, data = start_up(cfg)  # as train() starts: the folds trained after this one stay reproducible
    if data.split.split_id != tags.get(rf.SPLIT_ID) or data.dataset_id != tags.get(rf.DATASET_ID):
        raise DataError(
            f"resume: fold {fold + 1}'s data changed since it was trained (split {tags.get(rf.SPLIT_ID)} then, "
            f"{data.split.split_id} now; dataset {tags.get(rf.DATASET_ID)} then, {data.dataset_id} now): "
            "start a new cross-validation"
        )
    with hw.scope():
        classifier = build(cfg.model, len(data.class_names))
    batch = int(cfg.trainer.batch_size) * hw.replicas  # as ship() predicted them
    reasons: list[str] = []
    with tempfile.TemporaryDirectory(prefix="dermsweep-") as scratch:  # a downloaded copy: loaded, then deleted
        for weights in _weights_files(fold_run, reasons, Path(scratch)):  # where it saved them, then its run's copy
            try:
                _load_checked(classifier, weights, data.x["val"], logged.views["val"].get((0, False)), batch)
                break
            except _TrainAgain as why:
                reasons.append(str(why))
        else:
            raise _TrainAgain("; ".join(reasons))
    source = "its run's artifacts" if weights.is_relative_to(scratch) else str(weights)
    final = {
        "val": {k.removeprefix("final_val/"): v for k, v in metrics.items() if k.startswith("final_val/")},
        "test": {k.removeprefix("test/"): v for k, v in metrics.items() if k.startswith("test/")},
    }
    shipping = Shipping(
        classifier,
        Gains(),  # the fold's own gains are not needed: the bag chooses its gains out of fold
        logged.views,
        groups={part: logged.groups.get(part) for part in ("val", "test")},
        image_ids=logged.image_ids,
        # as the fold logged them: its cross-validation judges a weak fold with them, resumed or not
        intervals={part: _logged_intervals(figures) for part, figures in final.items()},
    )
    log.info("fold %d/%d: kept from run %s (%s)", fold + 1, int(cfg.data.split.folds), fold_run.info.run_id, source)
    return Trained(
        fold_run.info.run_id,
        tags.get("mlflow.runName", ""),
        classifier,
        shipping,
        final,
        {metric: float(metrics[rf.final_metric(metric)]) for metric, _ in objectives},
        data.class_names,
        data.dataset_id,
        logged.labels,
        data.split.split_id,
        data.x["test"],
        {},
    )


def _logged_intervals(figures: dict[str, float]) -> dict[str, Interval]:
    """The 95% intervals a run logged beside its figures (`<name>_lo95`, `<name>_hi95`)."""
    return {
        name: Interval(value, figures[f"{name}_lo95"], figures[f"{name}_hi95"])
        for name, value in figures.items()
        if f"{name}_lo95" in figures and f"{name}_hi95" in figures
    }


def _weights_files(fold_run, reasons: list[str], scratch: Path) -> Iterator[Path]:
    """The fold's weights file where it saved them, then (only if needed) the copy in its run's artifacts, downloaded
    to `scratch`: the machine that trained it may be gone while the tracking store is shared. Why either is unusable
    goes to reasons."""
    import mlflow

    local = Path(fold_run.data.tags.get(rf.CHECKPOINT, ""))
    if local.is_file():
        yield local
    else:
        reasons.append(f"has no weights at {local}")
    try:
        artifact = f"{rf.FOLD_WEIGHTS_DIR}/{local.name}"
        copy = Path(mlflow.MlflowClient().download_artifacts(fold_run.info.run_id, artifact, str(scratch)))
    except Exception as exc:
        reasons.append(f"has no copy of them in its run's artifacts ({first_line(exc)})")
        return
    log.info("resume: fold %d: its weights from its run's artifacts", int(fold_run.data.tags[rf.FOLD]) + 1)
    yield copy


def _load_checked(classifier, weights: Path, x_val: np.ndarray, then: np.ndarray | None, batch: int) -> None:
    """Load the weights and check they give the fold's logged logits on its first validation batch."""
    try:
        classifier.load_weights(weights)
    except Exception as exc:
        raise _TrainAgain(f"has weights at {weights} that do not load ({first_line(exc)})") from exc
    first = x_val[:batch]
    now = per_view(view_logits(classifier, batch), first, [(0, False)])[(0, False)]
    tolerance = CHECK_TOLERANCE["float32" if classifier.dtype_policy.compute_dtype == "float32" else "mixed"]
    if then is None or len(then) != len(x_val) or not _agree(now, then[: len(first)], tolerance):
        raise _TrainAgain(f"has weights at {weights} that no longer give its logged predictions")


def _agree(logits_now: np.ndarray, logits_then: np.ndarray, tolerance: float) -> bool:
    return bool(np.all(np.abs(logits_now - logits_then) <= tolerance * (1.0 + np.abs(logits_then))))
