"""Ensembles of the best runs: one shipped Keras model averaging several trained classifiers' logits.

Members are chosen on validation from the finished runs of an experiment or sweep that share the best run's split
and input size: the plain top k, or greedy forward selection (after Caruana et al. 2004: start from the best run,
add whichever other run most improves the ensemble's validation objective, stop at `size` or as soon as the best
addition is not better beyond validation's noise: better in fewer than `confidence` of a paired bootstrap of the
validation images, by lesion). Without that stop, and with replacement, greedy selection fits the ~1,400
validation images: the real sweep's champion ensemble gained 2.9 points on validation and 0.3 on test.
Each candidate's per-view logits come from the run itself (`evaluation/view_logits.npz`), so choosing costs no
prediction. The ensemble then gets its own evaluation-time gains (views,
temperature, prior adjustment, operating point, all on validation), is logged as a run of its own (role
`ensemble`) with the same metrics on the same split, and goes through the same promotion gate as any run.

Cross-validations on the same folds (CV runs, or a CV sweep's trials: one split id) combine the same way on their
out-of-fold predictions: each image is then scored by every member's fold model that never trained on it, so the
choice is made on ~6x the images of a validation split, and the ensemble ships every member's fold models. Its
validation figures are cross-fitted as a CV's are (each fold's rows through gains chosen on the other folds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import keras
import mlflow
import numpy as np
from omegaconf import OmegaConf

from ..errors import DermsweepError
from ..evaluation import bootstrap, metrics
from ..paths import conf_dir
from ..timing import median_latency_ms
from ..tracking import run_format as rf
from ..tracking.artifacts import BackgroundArtifacts, log_splits
from ..tracking.model_log import log_keras_model
from ..tracking.model_ref import load
from ..tracking.recorded_run import recorded_run
from ..tracking.store import ensure_experiment, first_line
from ..training.cross_fit import cross_fit
from ..training.gains import View, check, choose_gains, per_view, probabilities, wrap
from ..training.model import logits_inside
from ..training.ship import Shipping, member_views, view_logits
from ..training.ship_record import LoggedViews, log_gains, log_scores, log_view_logits, read_view_logits
from ..views import VIEWS
from .ensemble_data import EnsembleData, data_of
from .ranking import RunRow, collect_runs

log = logging.getLogger(__name__)
METHODS = ("greedy", "top")
CONFIDENCE = 0.9  # a member is added only when the ensemble with it is better in this share of the resamples


class EnsembleError(DermsweepError):
    """No ensemble can be built from these runs as asked."""


@dataclass
class Candidate:
    row: RunRow
    val: dict[View, np.ndarray]  # per-view validation logits the run logged
    test: dict[View, np.ndarray]
    value: float  # the run's own validation objective
    labels: dict[str, np.ndarray]  # "val" / "test" labels, in the order of the logits
    logged: LoggedViews  # all the run logged of its predictions (image and lesion ids included)


@dataclass
class Ensemble:
    members: list[Candidate]  # each run at most once
    run_id: str | None = None
    values: dict[str, float] = field(default_factory=dict)  # val / test objective of the ensemble
    best_single: float = float("nan")
    params: int = 0
    latency_ms: float = float("nan")
    trace: list[dict] = field(default_factory=list)  # the greedy steps: run, objective after, the evidence

    def member_ids(self) -> list[str]:
        return [m.row.run_id for m in self.members]


def build(
    client,
    experiment: str,
    sweep: str | None = None,
    size: int = 5,
    method: str = "greedy",
    candidates: int = 10,
    metric: str | None = None,
    inference=None,
    register_experiment: str | None = None,
    say: Callable[[str], None] = log.info,
    confidence: float = CONFIDENCE,
    runs: Sequence[str] | None = None,
) -> Ensemble:
    """Choose members on validation (among `runs` only where given: run ids or unique prefixes), wrap them with their
    gains, score, and log the ensemble as a run."""
    if method not in METHODS:
        raise EnsembleError(f"--method {method!r}: choose one of {', '.join(METHODS)}")
    if size < 2:
        raise EnsembleError(f"--size {size}: an ensemble needs at least 2 members")
    table = collect_runs(client, experiment, sweep, metric, finished_only=True)
    if runs:
        table.rows = _named(table.rows, runs)
    objective = rf.base_name(table.metric)
    if not objective or table.direction != "maximize":
        raise EnsembleError(f"ensembles are chosen by a metric to maximise; {table.metric} is {table.direction}d")
    pool = _candidates(table.rows, table.metric, candidates, say)
    inference = inference or default_inference()
    first = pool[0].row
    y = pool[0].labels
    meta = load(f"runs:/{first.run_id}/{rf.MODEL}", client)[1].meta
    class_names, height, width = list(meta["class_names"]), int(meta["input_height"]), int(meta["input_width"])
    data = data_of(pool[0].row, pool[0].logged, height, width, len(class_names))
    train_priors, groups = data.train_priors, data.groups

    def probabilities_of(members: list[Candidate]) -> np.ndarray:
        """The ensemble's shipped validation probabilities, with gains chosen for it."""
        val = member_views([m.val for m in members], _shared_views(members, "val"))
        gains = choose_gains(inference, y["val"], val, train_priors, class_names, f"val_{objective}", groups["val"])
        return probabilities(gains, val)

    ensemble = _select(pool, size, method, probabilities_of, y["val"], objective, groups["val"], confidence, say)
    views = _shared_views(ensemble.members, "val")
    val = member_views([m.val for m in ensemble.members], views)
    gains = choose_gains(inference, y["val"], val, train_priors, class_names, f"val_{objective}", groups["val"])
    test_views = VIEWS[gains.views]
    test = member_views([_test_logits(m, test_views, data.prepared) for m in ensemble.members], test_views)
    classifiers = _classifiers(ensemble.members)
    model = wrap(classifiers, height, width, gains, name="ensemble")
    shipping = Shipping(model, gains, {"val": val, "test": test}, groups=groups, image_ids=data.image_ids)
    check(model, data.prepared.x[data.check_part][:4], shipping.probabilities[data.check_part][:4])
    if data.fold_of_row is not None:  # out of fold: scored as a CV is, each fold by gains chosen on the others
        crossed = cross_fit(inference, y["val"], val, data.fold_of_row, groups["val"], class_names, f"val_{objective}")
        shipping.score_held_out("val", crossed.probabilities, crossed.thresholds)
    ensemble.values = {
        part: metrics.score(objective, y[part], shipping.probabilities[part]) for part in ("val", "test")
    }
    ensemble.best_single = max(c.value for c in pool)
    ensemble.params = int(model.count_params())
    x1 = data.prepared.x[data.check_part][:1].astype(np.float32)
    ensemble.latency_ms = median_latency_ms(lambda x: model.predict_on_batch(x), x1, runs=20, warmup=3)
    ensemble.run_id = _log(
        client, register_experiment or experiment, ensemble, shipping, y, class_names, meta, table.metric, data, say
    )
    return ensemble


def default_inference():
    """The `inference` section of conf/config.yaml: an ensemble's gains follow the same rules as a run's."""
    return OmegaConf.load(conf_dir() / "config.yaml").inference


def _named(rows: list[RunRow], names: Sequence[str]) -> list[RunRow]:
    """The rows of the runs named by id or unique id prefix, in their rank order."""
    chosen: set[str] = set()
    for name in names:
        found = [r.run_id for r in rows if r.run_id.startswith(name)]
        if len(found) != 1:
            why = "no finished candidate run" if not found else f"{len(found)} runs"
            raise EnsembleError(f"--runs {name}: {why} of this experiment has that id")
        chosen.add(found[0])
    return [r for r in rows if r.run_id in chosen]


def _candidates(rows: list[RunRow], metric: str, limit: int, say) -> list[Candidate]:
    roles = ("trial", "single", "cv")  # not an ensemble (its members are candidates themselves), nor a fold
    eligible = [r for r in rows if r.has_model and r.role in roles and r.metric(metric) is not None]
    if len(eligible) < 2:
        raise EnsembleError(f"an ensemble needs at least 2 finished runs with a model; found {len(eligible)}")
    best = eligible[0]
    size = (best.params.get("model.height"), best.params.get("model.width"))
    pool: list[Candidate] = []
    for row in eligible:
        if len(pool) >= limit:
            break
        if row.split_id != best.split_id or (row.params.get("model.height"), row.params.get("model.width")) != size:
            continue  # other data or input size: their logits are not comparable image by image
        try:
            path = mlflow.artifacts.download_artifacts(run_id=row.run_id, artifact_path=rf.VIEW_LOGITS)
        except Exception as exc:
            say(f"skipping {row.name} ({row.run_id[:8]}): no {rf.VIEW_LOGITS} ({first_line(exc)})")
            continue
        logged = read_view_logits(path)
        labels = logged.labels
        if pool and any(not np.array_equal(labels[p], pool[0].labels[p]) for p in labels):
            say(f"skipping {row.name} ({row.run_id[:8]}): its labels differ from the best run's on the same split")
            continue
        value = row.metric(metric)
        assert value is not None
        pool.append(Candidate(row, logged.views["val"], logged.views["test"], value, labels, logged))
    if len(pool) < 2:
        raise EnsembleError(
            f"fewer than 2 runs share the best run's split {best.split_id} and input size "
            f"{size[0]}x{size[1]} and logged their view logits"
        )
    say(f"{len(pool)} candidates, best single {pool[0].row.name}: {pool[0].value:.4f}")
    return pool


def _select(
    pool: list[Candidate],
    size: int,
    method: str,
    probabilities_of: Callable[[list[Candidate]], np.ndarray],
    y_val: np.ndarray,
    objective: str,
    groups: np.ndarray | None,
    confidence: float,
    say,
) -> Ensemble:
    """The members: the top `size`, or greedy forward selection that adds a run only when the ensemble with it beats
    the ensemble without it beyond the noise (paired bootstrap of the validation images)."""
    if method == "top":
        members = pool[:size]
        return Ensemble(members, trace=[{"run": m.row.run_id, "objective": None} for m in members])
    members = [pool[0]]
    current = probabilities_of(members)
    value = metrics.score(objective, y_val, current)
    trace: list[dict] = [{"run": pool[0].row.run_id, "objective": value}]
    stopped = ""
    while len(members) < size:
        rest = [c for c in pool if c not in members]
        if not rest:
            break
        tried = [(probabilities_of([*members, c]), c) for c in rest]
        scored = [(metrics.score(objective, y_val, probs), -i, probs, c) for i, (probs, c) in enumerate(tried)]
        best_value, _, probs, chosen = max(scored, key=lambda t: (t[0], t[1]))
        found = bootstrap.paired(y_val, probs, current, objective, groups)
        if not bootstrap.clearly_better(found, confidence):
            stopped = f"+ {chosen.row.name} would change the validation objective by {found.describe()}"
            trace.append({"run": chosen.row.run_id, "objective": best_value, "added": False, **found.to_json()})
            say(f"{stopped}: not clearly better (P < {confidence:g}), stopping")
            break
        members.append(chosen)
        current = probs
        trace.append({"run": chosen.row.run_id, "objective": best_value, "added": True, **found.to_json()})
        say(f"+ {chosen.row.name}: validation objective {best_value:.4f} ({found.describe()})")
    if len(members) < 2:
        raise EnsembleError(
            f"no second run improves on the best run's validation objective beyond the noise ({stopped}; "
            f"needs P >= {confidence:g}): no ensemble to ship; --method top builds one anyway"
        )
    return Ensemble(members, trace=trace)


def _shared_views(members: list[Candidate], part: str) -> tuple[View, ...]:
    """The dihedral views every member logged for `part` (all of them when runs used inference.views=auto)."""
    views = [v for v in VIEWS["dihedral"] if all(v in getattr(m, part) for m in members)]
    return tuple(views)


def _test_logits(member: Candidate, views: tuple[View, ...], prepared) -> dict[View, np.ndarray]:
    """The member's test logits for `views`: from its run when it logged them, else predicted now."""
    missing = [v for v in views if v not in member.test]
    if missing:  # a bag's test logits: the mean over its fold models, as the CV logged its own
        found = [per_view(view_logits(c, 64), prepared.x["test"], missing) for c in _classifiers_of(member.row)]
        member.test.update(member_views(found, missing))
    return {v: member.test[v] for v in views}


def _classifiers_of(row: RunRow) -> list[keras.Model]:
    """The trained classifiers (as logits models) inside a run's shipped model: one, or a CV's fold models."""
    model, _ = load(f"runs:/{row.run_id}/{rf.MODEL}")
    found = logits_inside(model)
    if len(found) != 1 and not (rf.is_cross_validation(row.tags) and found):
        raise EnsembleError(
            f"run {row.run_id}'s model holds {len(found)} classifiers (an ensemble, or a model logged "
            "before shipped models): choose members among single runs and cross-validations"
        )
    return found


def _classifiers(members: list[Candidate]) -> list[keras.Model]:
    """Each member entry's classifiers (a CV's fold models, averaged like its own bag; repeats share the loaded
    models: a weight, not a copy)."""
    loaded: dict[str, list[keras.Model]] = {}
    out = []
    for m in members:
        if m.row.run_id not in loaded:
            classifiers = _classifiers_of(m.row)
            for i, classifier in enumerate(classifiers):
                classifier.name = f"member_{len(loaded)}" + (f"_fold_{i}" if len(classifiers) > 1 else "")
            loaded[m.row.run_id] = classifiers
        out.extend(loaded[m.row.run_id])
    return out


def _log(
    client,
    experiment: str,
    ensemble: Ensemble,
    shipping: Shipping,
    y: dict[str, np.ndarray],
    class_names: list[str],
    meta: dict,
    metric: str,
    data: EnsembleData,
    say,
) -> str:
    first = ensemble.members[0].row
    exp_id = ensure_experiment(client, experiment)
    ids = ensemble.member_ids()
    tags = {
        rf.MEMBERS: ",".join(ids),
        rf.OBJECTIVE_METRIC: first.tags.get(rf.OBJECTIVE_METRIC, "val_balanced_accuracy"),
        rf.OBJECTIVE_DIRECTION: "maximize",
        rf.SPLIT_ID: first.split_id or "",
        rf.DATASET_ID: first.tags.get(rf.DATASET_ID, ""),
    }
    if first.tags.get(rf.STUDY_NAME):
        tags[rf.STUDY_NAME] = first.tags[rf.STUDY_NAME]
    name = f"ensemble-{len(set(ids))}of{len(ids)}"
    started = time.perf_counter()
    with recorded_run(client, exp_id, name, "ensemble", tags=tags) as run:  # claimed: reapable if killed
        figures = BackgroundArtifacts(run.run_id)
        mlflow.log_params(
            {
                "ensemble.members": ",".join(ids),
                "ensemble.size": len(ids),
                "model.params": ensemble.params,
                "model.height": meta["input_height"],
                "model.width": meta["input_width"],
            }
        )
        prepared = data.prepared
        log_splits(data.splits, prepared.catalog.source, first.split_id or "", str(prepared.catalog.source))
        final = log_scores(y, class_names, shipping, figures)
        log_gains(y, class_names, shipping, figures)
        log_view_logits(shipping, y)
        mlflow.log_metrics(
            {
                rf.metric(rf.RUN, "params"): ensemble.params,
                rf.metric(rf.RUN, "latency_ms"): ensemble.latency_ms,
                rf.metric(rf.RUN, "best_single_val"): ensemble.best_single,
            }
        )
        info = {
            k: meta[k]
            for k in ("class_names", "full_names", "input_height", "input_width", "input", "resize")
            if k in meta
        }
        info.update(
            members=ids,
            split_id=first.split_id,
            dataset_id=first.tags.get(rf.DATASET_ID, ""),
            **shipping.gains.to_meta(),
        )
        log_keras_model(shipping.model, prepared.x[data.check_part][:1].astype(np.float32), info)
        figures.wait()
        val = final["val"]
        run.finish(
            f"{name} of {', '.join(m.row.name for m in ensemble.members)}: validation balanced accuracy "
            f"{val['balanced_accuracy']:.3f} (best single {ensemble.best_single:.3f}), {ensemble.params:,} "
            f"parameters, {ensemble.latency_ms:.0f} ms per image"
        )
    say(f"ensemble run {run.run_id} logged in {time.perf_counter() - started:.0f}s")
    return str(run.run_id)
