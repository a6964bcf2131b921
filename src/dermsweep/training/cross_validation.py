"""Cross-validation as a mode of the task: `data.split.folds=k` trains one model per lesion-grouped fold of
train + validation (each a child run, role "fold") under one parent run (role "cv", or "trial" in a sweep).

The choices a single run makes on its 15% validation split are made here on the out-of-fold predictions: every
train + validation image scored by the fold model that never trained on it (~6x the images, so a gain, a threshold
or a trial is judged with a real standard error). The parent ships the k fold models as one bagged model (their
logits averaged) with those gains, and scores it once on the test split, which every fold leaves out.

    parent  cv/fold_objective (step = fold), cv/objective_mean, cv/objective_se: the fold runs' own objectives
            final_val/*: out of fold, each fold's rows through gains chosen on the other folds (cross_fit.py):
            no choice made on the images it scores, so sweeps, `runs` and the gate rank on the figure to hold
            test against (its view logits' shipped probabilities are these rows, for the gate's pairs)
            cv/in_sample_*: out of fold through the shipped gains, chosen on these same images (its excess over
            final_val is what choosing on them flatters);  test/*: the bag, scored once
    fold i  a complete run whose validation split is fold i (its checkpoint and early stopping follow that fold,
            a mild optimism its out-of-fold figure shares with any early-stopped model's validation figure)
            a fold far below the others (weak_folds.py: a model that failed to train) is trained again with another
            seed (retry_weak_folds times at most); the bag holds the retry, the weak run stays, tagged replaced_by

In a sweep the parent is the trial: after each fold it reports the running mean to the pruner (step = fold), so a
trial that is clearly worse than the others after its first fold stops there (racing: only promising trials pay
for every fold).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from ..data.catalog import digest
from ..evaluation.metrics import scores
from ..sweep import trial_link
from ..tracking import run_format as rf
from ..tracking.artifacts import BackgroundArtifacts, flatten, log_json
from ..tracking.model_log import log_keras_model
from ..tracking.recorded_run import recorded_run
from ..tracking.store import connect, ensure_experiment, ui_hint
from ..views import VIEWS
from . import config, cv_resume, distillation, provenance
from .cross_fit import cross_fit
from .gains import View, check, choose_gains, per_view, views_needed, wrap
from .ship import Shipping, member_views, priors, view_logits
from .ship_record import log_gains, log_scores, log_view_logits
from .single_run import Trained, model_info, objective_values, run_name, run_tags, should_log_model, train
from .weak_folds import WeakFold, tag_value, weak_folds

log = logging.getLogger("dermsweep")

# A weak fold's retry n trains with seed + n * RETRY_SEED_STEP: far from the seeds a user tries next (1, 2, 3, ...).
RETRY_SEED_STEP = 1000


def requested(cfg: DictConfig) -> bool:
    """A cross-validation: folds are set and no single fold is asked for."""
    split = cfg.data.split
    return split.get("folds") is not None and split.get("fold") is None


def run(cfg: DictConfig) -> dict[str, float]:
    started = time.perf_counter()
    folds = int(cfg.data.split.folds)
    client = connect(str(cfg.tracking.uri))
    experiment_id = ensure_experiment(client, str(cfg.experiment), cfg.tracking.get("artifact_root"))
    link = trial_link.current()
    parent_id = trial_link.parent_run_id()
    objectives = config.objectives(cfg)
    objective, direction = objectives[0]
    # a stopped CV to continue: checked (run, config, state) before it is reopened
    resumption = cv_resume.find(client, cfg, link is not None) if cfg.get("resume") else None
    name = resumption.name if resumption else f"{run_name(cfg, link)}-cv{folds}"
    git = provenance.git_state()
    tags = {**run_tags(objective, direction, str(cfg.hardware.backend), link, git), rf.CV_FOLDS: str(folds)}
    if resumption:
        tags[rf.RESUMED_AFTER] = resumption.previous_end
        if resumption.commit_note:
            tags[rf.RESUMED_COMMITS] = resumption.commit_note
    # the kept folds rebuilt before the stopped run is reopened: a check that fails leaves it as it was
    restored: dict[int, Trained] = {}
    attempts: dict[int, int] = {}  # fold -> how often it was trained again (a kept retry's count)
    retried: list[Retried] = []  # kept retries, then those trained now
    for fold, fold_run in (resumption.kept if resumption else {}).items():
        attempt = int(fold_run.data.tags.get(rf.FOLD_ATTEMPT, 0))
        fold_cfg = _fold_config(cfg, fold, fold_run.info.run_name, attempt)
        rebuilt = cv_resume.restore(fold_cfg, fold_run, objectives)
        if rebuilt is not None:
            restored[fold], attempts[fold] = rebuilt, attempt
            if attempt:
                retried.append(Retried(fold, math.nan, rebuilt.values[objective], int(fold_cfg.seed)))
    role = "trial" if link is not None else "cv"
    with recorded_run(
        client,
        experiment_id,
        name,
        role,
        tags=tags,
        parent_run_id=parent_id,
        resume_run_id=resumption.run_id if resumption else None,
    ) as recorded:
        if link is not None:
            link.set_run_id(recorded.run_id)
            link.set_user_attr(trial_link.FOLDS_ATTR, folds)  # its steps are folds: "after fold 1 of k" in the lines
        if resumption is None:  # a resumed run logged them when it started (and they are checked to be the same)
            mlflow.log_params({**flatten(cfg), **git})
        fold_runs: list[Trained] = []
        try:
            for fold in range(folds):
                fold_cfg = _fold_config(cfg, fold, _fold_name(name, fold, folds))
                trained = restored.get(fold)
                if trained is None:
                    trained = train(
                        fold_cfg, role="fold", parent_run_id=recorded.run_id, link=None, may_log_model=False
                    )
                    # (a kept fold's point was logged before the stop)
                    mlflow.log_metric(rf.metric(rf.CV, "fold_objective"), trained.values[objective], step=fold)
                fold_runs.append(trained)
                running = float(np.mean([t.values[objective] for t in fold_runs]))
                log.info(
                    "fold %d/%d: %s %.4f (mean so far %.4f)",
                    fold + 1,
                    folds,
                    objective,
                    trained.values[objective],
                    running,
                )
                if link is not None:  # racing: the pruner may stop this trial after any fold but the last
                    link.report(fold, running, prunable=fold < folds - 1)
            retried_now, weak = _retry_weak_folds(
                cfg, client, fold_runs, attempts, name, recorded.run_id, objective, direction
            )
            retried += retried_now
        except BaseException:
            if link is None:  # a sweep's trial is not resumed: the sweep goes on without it
                log.warning(
                    "cross-validation %s stopped with %d of %d folds finished (each fold's weights are kept); "
                    "continue it by adding resume=%s to the same command",
                    recorded.run_id,
                    len(fold_runs),
                    folds,
                    recorded.run_id,
                )
            raise
        figures = BackgroundArtifacts(recorded.run_id)
        try:
            shipping, crossed, in_sample, y, split_id, dataset_id = _bag(cfg, fold_runs, objective)
            mlflow.set_tag(rf.SPLIT_ID, split_id)
            mlflow.set_tag(rf.DATASET_ID, dataset_id)
            if fold_runs[0].teacher:
                mlflow.set_tag(rf.TEACHER, fold_runs[0].teacher["teacher"]["description"])
                if saw := distillation.saw_validation_of_folds([t.teacher for t in fold_runs]):
                    mlflow.set_tag(rf.TEACHER_SAW_VALIDATION, saw)
            # the bag's size: what the promotion gate's parameter limit (a phone's budget) reads
            params = shipping.model.count_params()
            mlflow.log_param("model.params", str(params))
            mlflow.log_metric(rf.metric(rf.RUN, "params"), params)
            fold_values = np.array([t.values[objective] for t in fold_runs])
            if weak:
                mlflow.set_tag(rf.WEAK_FOLDS, tag_value([w.fold for w in weak]))
            if retried:
                mlflow.set_tag(rf.RETRIED_FOLDS, tag_value([r.fold for r in retried]))
            final = log_scores(y, fold_runs[0].class_names, shipping, figures)
            log_gains(y, fold_runs[0].class_names, shipping, figures)
            log_view_logits(shipping, y)
            mlflow.log_metrics(_cv_metrics(fold_runs, fold_values, y))
            mlflow.log_metrics(
                {rf.metric(rf.CV, f"in_sample_{m}"): v for m, v in in_sample.items() if math.isfinite(v)}
            )
            log_json(crossed.chosen, rf.CROSS_FITTED_GAINS)
            mlflow.log_text(_folds_table(fold_runs).to_csv(index=False), rf.FOLDS_TABLE)
            values = objective_values(objectives, final, shipping.model)
            if should_log_model(cfg, link, [values[m] for m, _ in objectives]):
                info = model_info(cfg, fold_runs[0].class_names, split_id, dataset_id, shipping)
                info["members"] = folds
                info.update(fold_runs[0].teacher)  # a distilled cross-validation: every fold had the same teacher
                log_keras_model(shipping.model, fold_runs[0].test_images[:1].astype(np.float32), info)
            figures.wait()
        except BaseException:
            figures.abandon()
            raise
        recorded.finish(_description(name, folds, fold_values, final, weak, retried, objective))
    uri = str(client.tracking_uri)
    for w in weak:
        log.warning(
            "%s: far below the others, its model may have failed to train (see its run's curves); it is in the bag%s",
            w.describe(objective),
            f" (retry_weak_folds={cfg.retry_weak_folds} spent)"
            if cfg.retry_weak_folds
            else "; retry_weak_folds=1 trains such a fold again with another seed",
        )
    log.info(
        "\ncross-validation %s (%d folds) finished in %.0fs\n"
        "  folds:        %s %.4f +- %.4f (mean +- standard error)\n"
        "  out of fold:  balanced accuracy %.3f, macro F1 %.3f, AUC %.3f (gains chosen on the other folds)\n"
        "  in-sample:    balanced accuracy %.3f, macro F1 %.3f, AUC %.3f (gains chosen on these images)\n"
        "  test (bag):   balanced accuracy %.3f, macro F1 %.3f, AUC %.3f\n"
        "  open it:      %s",
        name,
        folds,
        time.perf_counter() - started,
        objective,
        fold_values.mean(),
        _se(fold_values),
        final["val"]["balanced_accuracy"],
        final["val"]["macro_f1"],
        final["val"]["macro_auc"],
        in_sample["balanced_accuracy"],
        in_sample["macro_f1"],
        in_sample["macro_auc"],
        final["test"]["balanced_accuracy"],
        final["test"]["macro_f1"],
        final["test"]["macro_auc"],
        ui_hint(uri, experiment_id, recorded.run_id),
    )
    return values


def _fold_config(cfg: DictConfig, fold: int, name: str, attempt: int = 0) -> DictConfig:
    """Fold `fold`'s run config; trained again (`attempt` > 0), another seed for its model on the same split."""
    fold_cfg = cfg.copy()
    OmegaConf.update(fold_cfg, "data.split.fold", fold)
    OmegaConf.update(fold_cfg, "run_name", name)
    if attempt:
        OmegaConf.update(fold_cfg, "data.split.seed", config.split_seed(cfg))
        OmegaConf.update(fold_cfg, "seed", int(cfg.seed) + RETRY_SEED_STEP * attempt)
    return fold_cfg


def _fold_name(name: str, fold: int, folds: int, attempt: int = 0) -> str:
    """A fold run's name under its CV's: "<cv>-fold2of5", and "<cv>-fold2of5-retry1" when it trains the fold again."""
    return f"{name}-fold{fold + 1}of{folds}" + (f"-retry{attempt}" if attempt else "")


@dataclass(frozen=True)
class Retried:
    fold: int  # 0-based
    weak_value: float  # the objective of the model it replaced (nan: a retry kept by a resumed CV)
    value: float
    seed: int


def _retry_weak_folds(
    cfg: DictConfig,
    client,
    fold_runs: list[Trained],
    attempts: dict[int, int],
    name: str,
    parent_run_id: str,
    objective: str,
    direction: str,
) -> tuple[list[Retried], list[WeakFold]]:
    """Train each weak fold again with the next seed, up to cfg.retry_weak_folds times a fold, while the rule still
    names it; its retry replaces it in `fold_runs` (the weak run stays, tagged with its replacement). Returns the
    retries and the folds still weak."""
    limit, folds = int(cfg.retry_weak_folds), len(fold_runs)
    retried: list[Retried] = []
    while True:
        values = np.array([t.values[objective] for t in fold_runs])
        found = weak_folds(values, [_sampling_se(t, objective) for t in fold_runs], direction)
        weak = [w for w in found if attempts.get(w.fold, 0) < limit]
        if not weak:
            return retried, found
        for w in weak:
            attempt = attempts.get(w.fold, 0) + 1
            fold_cfg = _fold_config(cfg, w.fold, _fold_name(name, w.fold, folds, attempt), attempt)
            log.warning(
                "%s: far below the others, its model may have failed to train; training it again with seed %d "
                "(retry %d of %d)",
                w.describe(objective),
                int(fold_cfg.seed),
                attempt,
                limit,
            )
            weak_run = fold_runs[w.fold]
            again = train(
                fold_cfg, role="fold", parent_run_id=parent_run_id, link=None, may_log_model=False, attempt=attempt
            )
            client.set_tag(weak_run.run_id, rf.REPLACED_BY, again.run_id)
            mlflow.log_metric(rf.metric(rf.CV, "fold_objective"), again.values[objective], step=w.fold)
            log.info(
                "fold %d/%d again: %s %.4f (was %.4f)", w.fold + 1, folds, objective, again.values[objective], w.value
            )
            fold_runs[w.fold], attempts[w.fold] = again, attempt
            retried.append(Retried(w.fold, w.value, again.values[objective], int(fold_cfg.seed)))


def _bag(cfg: DictConfig, fold_runs: list[Trained], objective: str):
    """The bagged model (test views averaged over the fold models) with gains chosen on the out-of-fold views (each
    image by its own fold's model), its out-of-fold rows scored cross-fitted (each fold's through gains chosen on
    the others); the same rows' scores through the shipped gains (in-sample) beside it."""
    needed: tuple[View, ...] = views_needed(cfg.inference)
    oof_views = {v: np.concatenate([t.shipping.views["val"][v] for t in fold_runs]) for v in needed}
    y = {"val": np.concatenate([t.y["val"] for t in fold_runs]), "test": fold_runs[0].y["test"]}
    groups = {
        "val": _concat_or_none([t.shipping.groups.get("val") for t in fold_runs]),
        "test": fold_runs[0].shipping.groups.get("test"),
    }
    ids = {
        "val": np.concatenate([t.shipping.image_ids["val"] for t in fold_runs]),
        "test": fold_runs[0].shipping.image_ids["test"],
    }
    class_names = fold_runs[0].class_names
    gains = choose_gains(
        cfg.inference, y["val"], oof_views, priors(y["val"], len(class_names)), class_names, objective, groups["val"]
    )
    fold_of_row = np.concatenate([np.full(len(t.y["val"]), fold) for fold, t in enumerate(fold_runs)])
    crossed = cross_fit(cfg.inference, y["val"], oof_views, fold_of_row, groups["val"], class_names, objective)
    batch = int(cfg.trainer.batch_size)
    test_images = fold_runs[0].test_images
    test_views = member_views(
        [_test_views(t, test_images, VIEWS[gains.views], batch) for t in fold_runs], VIEWS[gains.views]
    )
    for fold, t in enumerate(fold_runs):
        t.classifier.name = f"fold_{fold}"  # the bag's members need distinct names
    model = wrap([t.classifier for t in fold_runs], int(cfg.model.height), int(cfg.model.width), gains, name="cv_bag")
    shipping = Shipping(model, gains, {"val": oof_views, "test": test_views}, groups=groups, image_ids=ids)
    check(model, test_images[:8], shipping.probabilities["test"][:8])
    in_sample = scores(y["val"], shipping.probabilities["val"])
    shipping.score_held_out("val", crossed.probabilities, crossed.thresholds)
    # The split's identity: the test part and every fold's validation part (the folds' own split ids, in order).
    split_id = digest([t.split_id for t in fold_runs])
    return shipping, crossed, in_sample, y, split_id, fold_runs[0].dataset_id


def _test_views(trained: Trained, images: np.ndarray, names, batch: int) -> dict[View, np.ndarray]:
    """The fold model's test logits for these views: those its own run scored, the rest predicted now."""
    have = trained.shipping.views["test"]
    missing = [v for v in names if v not in have]
    found = per_view(view_logits(trained.classifier, batch), images, missing) if missing else {}
    return {v: have[v] if v in have else found[v] for v in names}


def _folds_table(fold_runs: list[Trained]) -> pd.DataFrame:
    """Which fold held each image out (the test part: -1), with its label and lesion."""

    def rows(t: Trained, part: str, fold: int) -> pd.DataFrame:
        labels = [t.class_names[i] for i in t.y[part]]
        ids, groups = t.shipping.image_ids[part], t.shipping.groups.get(part)
        return pd.DataFrame({"image_id": ids, "label": labels, "group": groups, "fold": fold})

    held_out = [rows(t, "val", fold) for fold, t in enumerate(fold_runs)]
    return pd.concat([*held_out, rows(fold_runs[0], "test", -1)], ignore_index=True)


def _concat_or_none(parts):
    return None if any(p is None for p in parts) else np.concatenate(parts)


def _se(values: np.ndarray) -> float:
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else math.nan


def _cv_metrics(fold_runs: list[Trained], fold_values: np.ndarray, y) -> dict[str, float]:
    out = {
        rf.metric(rf.CV, "objective_mean"): float(fold_values.mean()),
        rf.metric(rf.CV, "objective_se"): _se(fold_values),
        rf.metric(rf.CV, "folds"): float(len(fold_runs)),
        rf.metric(rf.CV, "n_out_of_fold"): float(len(y["val"])),
    }
    fold_test = np.array([t.final["test"]["balanced_accuracy"] for t in fold_runs])
    out[rf.metric(rf.CV, "fold_test_balanced_accuracy_mean")] = float(fold_test.mean())
    out[rf.metric(rf.CV, "fold_test_balanced_accuracy_se")] = _se(fold_test)
    return {k: v for k, v in out.items() if math.isfinite(v)}


def _sampling_se(trained: Trained, objective: str) -> float | None:
    """The fold's objective's standard error on its own images (from its bootstrap interval, where it has one)."""
    interval = trained.shipping.intervals.get("val", {}).get(objective.removeprefix("val_"))
    return None if interval is None else interval.standard_error()


def _description(
    name: str, folds: int, fold_values: np.ndarray, final, weak: list[WeakFold], retried: list[Retried], objective: str
) -> str:
    text = (
        f"{name}: {folds} folds, objective {fold_values.mean():.4f} +- {_se(fold_values):.4f} (mean +- standard "
        f"error); out of fold balanced accuracy {final['val']['balanced_accuracy']:.3f}; the bag on test "
        f"{final['test']['balanced_accuracy']:.3f}"
    )
    for r in retried:
        was = (
            f"{objective} {r.weak_value:.3f}, now {r.value:.3f}"
            if math.isfinite(r.weak_value)
            else f"now {r.value:.3f}"
        )
        text += (
            f"; fold {r.fold + 1} trained again with seed {r.seed} (its model was far below the other folds': {was})"
        )
    if weak:
        text += "; far below the other folds (it may have failed to train): " + "; ".join(
            w.describe(objective) for w in weak
        )
    return text
