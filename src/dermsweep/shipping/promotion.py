"""The promotion gate and the registry's aliases: is the best run better than `@champion` on the same split,
beyond the noise, and if so register it and move `@champion` (the old one becomes `@previous`).

The gate compares candidate and champion on the same validation images: a paired bootstrap (by lesion) of the
difference in the objective between their shipped predictions (validation_pairs), widened by each run's training
seed noise (seed_noise: measured on the experiment's repeated seeds, else a default), since a candidate that wins by
its seed's luck would lose when trained again. It promotes when the candidate is better in at least `confidence`
(0.9) of the resamples; otherwise it keeps the champion and says why ("not clearly better: +0.8 points [-1.9, +3.4],
P=0.71"). Runs that logged no shipped validation predictions (before the gate) are compared by their point values,
and the reason says so.

One promotion at a time: plan, register and alias move run under the store's promotion lock (registry_lock), and
the alias moves only if `@champion` still names the version the plan saw (compare-and-set, for remote stores).

Registry safety: the aliases move only after the new version is READY; `previous` is set (to the old champion)
before `champion` moves, so at every instant `@champion` names a complete version. A failure before that leaves
the old champion in place and removes the half-made version.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field

from ..errors import ConfigError, DermsweepError
from ..evaluation import bootstrap
from ..objectives import better
from ..tracking import run_format as rf
from ..tracking.model_ref import resolve
from ..tracking.store import first_line
from ..training.weak_folds import told, told_retried
from .defaults import CONFIDENCE, MAX_PARAMS
from .model_card import model_card
from .ranking import RegistryError, RunRow, RunsTable, best_candidate
from .registry_lock import promotion_lock
from .seed_noise import for_table, given_noise
from .serving_model import ensure_serving_model
from .training_data import from_run
from .validation_pairs import NotPaired, compare

log = logging.getLogger(__name__)
# A champion runs on phones and in browsers: a single model or an ensemble, at most this many parameters.
COMPARISON_TAG = "dermsweep.promotion_comparison"  # on the registered version: the paired bootstrap, as JSON
COMPARISON_ARTIFACT = "promotion/comparison.json"  # in the promoted run: the same, beside its model card


class PromotionRefused(DermsweepError):
    """The gate said no: the candidate is not better, or not comparable, than the current champion."""

    def __init__(self, message: str, promotion: Promotion | None = None):
        super().__init__(message)
        self.promotion = promotion


@dataclass
class Side:
    """One side of the comparison: the candidate run or the current champion version."""

    run_id: str | None
    value: float | None
    split_id: str | None
    version: str | None = None
    name: str | None = None
    sweep: str | None = None


@dataclass
class Promotion:
    model_name: str
    metric: str
    direction: str
    candidate: Side
    champion: Side | None
    decision: str = "pending"  # promote | promoted | refused | dry-run
    reason: str = ""
    forced: bool = False
    version: str | None = None
    notes: list[str] = field(default_factory=list)
    confidence: float = CONFIDENCE
    comparison: dict | None = None  # the paired bootstrap of the difference on shared validation images
    seed_noise: float | None = None  # points per run the user gave (0: images only); None: measured or the default

    def to_json(self) -> dict:
        def side(s):
            return None if s is None else s.__dict__

        return {
            "model_name": self.model_name,
            "metric": self.metric,
            "direction": self.direction,
            "candidate": side(self.candidate),
            "champion": side(self.champion),
            "decision": self.decision,
            "reason": self.reason,
            "forced": self.forced,
            "version": self.version,
            "notes": self.notes,
            "confidence": self.confidence,
            "comparison": self.comparison,
            # what the user asked for (--seed-noise); the noise used, and where it came from: comparison.seed_noise
            "seed_noise_given": self.seed_noise,
        }


def current_champion(client, name: str, metric: str) -> Side | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, rf.CHAMPION)
    except MlflowException as exc:
        if (
            "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", ""))
            or "not found" in str(exc).lower()
            or "does not exist" in str(exc).lower()
        ):
            return None
        raise RegistryError(f"cannot read models:/{name}@{rf.CHAMPION}: {first_line(exc)}") from exc
    tags = dict(mv.tags or {})
    versions = {k.removeprefix(rf.VERSION_METRIC): float(v) for k, v in tags.items() if k.startswith(rf.VERSION_METRIC)}
    value = rf.read(versions, metric)
    split_id = tags.get(rf.SPLIT_ID)
    if mv.run_id and (value is None or split_id is None):
        try:
            run = client.get_run(mv.run_id)
            value = rf.read(run.data.metrics, metric) if value is None else value
            split_id = split_id or run.data.tags.get(rf.SPLIT_ID)
        except MlflowException:
            pass
    return Side(mv.run_id, value, split_id, version=str(mv.version), name=name, sweep=tags.get(rf.SWEEP))


def plan(
    client,
    experiment: str,
    name: str = rf.REGISTERED_MODEL,
    sweep: str | None = None,
    metric: str | None = None,
    force: bool = False,
    max_params: int | None = MAX_PARAMS,
    confidence: float = CONFIDENCE,
    seed_noise: float | None = None,
) -> tuple[Promotion, RunRow]:
    """Decide without changing anything. decision is 'promote' or 'refused' (with the reason)."""
    best, table = best_candidate(client, experiment, sweep, metric, max_params)
    sweep_ref = best.tags.get(rf.PARENT_RUN_ID) or best.tags.get(rf.STUDY_NAME)
    cand = Side(best.run_id, best.metric(table.metric), best.split_id, name=best.name, sweep=sweep_ref)
    champ = current_champion(client, name, table.metric)
    p = Promotion(name, table.metric, table.direction, cand, champ, forced=force, confidence=confidence)
    p.seed_noise = seed_noise
    above = [r for r in table.rows[: table.rows.index(best)] if not r.has_model]
    outside = [r for r in table.rows[: table.rows.index(best)] if r.has_model and r not in above]
    too_big = [r for r in outside if r.params_count() is not None]
    unsized = [r for r in outside if r.params_count() is None]
    if unsized:
        p.notes.append(
            f"{len(unsized)} run(s) rank above it by {table.metric} but recorded no parameter count (param "
            f"model.params; e.g. {unsized[0].name}, {unsized[0].run_id}), so the {max_params:,}-parameter limit "
            "keeps them out: retrain them with this dermsweep to make them eligible"
        )
    if too_big:
        p.notes.append(
            f"{len(too_big)} run(s) rank above it by {table.metric} but have more than {max_params:,} parameters "
            f"(e.g. {too_big[0].name}, {too_big[0].params_count():,}): a champion must fit on a phone; "
            "--max-params changes the limit"
        )
    if above:
        p.notes.append(
            f"{len(above)} finished run(s) rank above it by {table.metric} but logged no model (e.g. {above[0].name}, "
            f"{above[0].run_id}): sweeps with tracking.log_model=improving keep models only for trials that beat "
            "the sweep's best on its objective; re-run them with tracking.log_model=always to make them eligible"
        )
    if saw := best.teacher_saw_validation():
        p.notes.append(f"its {saw} against runs taught otherwise (docs/quality.md: how far); test figures are clean")
    if retried := best.tags.get(rf.RETRIED_FOLDS):
        p.notes.append(f"its cross-validation's {told_retried(retried)}: see the run's description")
    if weak := best.tags.get(rf.WEAK_FOLDS):
        p.notes.append(f"its cross-validation's {told(weak)}; that model is in the bag: see the run's description")
    assert cand.value is not None  # best_candidate only returns runs with the metric
    if champ is None:
        p.decision, p.reason = "promote", f"first champion of {name}: best {table.metric} = {cand.value:.4f}"
        return p, best
    problems = []
    if champ.run_id == cand.run_id:
        problems.append(f"run {cand.run_id} is already the champion (v{champ.version})")
    elif champ.value is None:
        problems.append(f"the champion v{champ.version} has no {table.metric} to compare with")
    elif champ.split_id != cand.split_id:
        problems.append(
            f"not comparable: the candidate was scored on split {cand.split_id} but champion v{champ.version} on "
            f"split {champ.split_id}; numbers from different validation sets cannot rank models "
            "(re-train both on one split, or use --force if you accept that)"
        )
    else:
        problems += _gate(client, p, table)
    if problems and not force:
        p.decision, p.reason = "refused", "; ".join(problems)
    elif problems:
        p.decision, p.reason = "promote", "forced over: " + "; ".join(problems)
    elif p.comparison is not None:
        p.decision = "promote"
        p.reason = (
            f"clearly better: {table.metric} {cand.value:.4f} vs champion v{champ.version}'s {champ.value:.4f}, "
            f"{p.comparison['describe']} on {p.comparison['n_images']} shared validation images"
            f"{_noise_words(p.comparison['training_sd'])} (P >= {confidence:g} needed)"
        )
    else:
        p.decision = "promote"
        p.reason = (
            f"{table.metric} {cand.value:.4f} beats champion v{champ.version}'s {champ.value:.4f} "
            f"on split {cand.split_id} (point values only: {p.notes[-1]})"
        )
    return p, best


def _gate(client, p: Promotion, table: RunsTable) -> list[str]:
    """The noise-aware comparison of a comparable candidate and champion: [] to promote, else the reason why not.
    Sets p.comparison; without paired predictions, the point values decide and a note says so."""
    cand, champ = p.candidate, p.champion
    assert champ is not None and cand.run_id and champ.run_id and cand.value is not None and champ.value is not None
    noise = for_table(client, table, p.seed_noise)
    try:
        found = compare(client, cand.run_id, champ.run_id, p.metric, p.direction, noise)
    except NotPaired as exc:
        p.notes.append(f"no paired comparison ({exc})")
        if better(cand.value, champ.value, p.direction):
            return []
        return [
            f"candidate {p.metric} = {cand.value:.4f} is not better than champion v{champ.version}'s "
            f"{champ.value:.4f} ({p.direction}, same split {cand.split_id})"
        ]
    p.comparison = {
        **found.to_json(),
        "describe": found.describe(),
        "confidence": p.confidence,
        "seed_noise": noise.to_json(),
    }
    if bootstrap.clearly_better(found, p.confidence):
        return []
    return [
        f"not clearly better: {found.describe()} over champion v{champ.version} on {found.n_images} shared "
        f"validation images ({found.n_groups} lesions){_noise_words(found.training_sd)}; "
        f"promotion needs P >= {p.confidence:g}"
    ]


def _noise_words(training_sd: float) -> str:
    return f" with {100 * training_sd:.1f} points of seed noise per run" if training_sd else ""


def promote(
    client,
    experiment: str,
    name: str = rf.REGISTERED_MODEL,
    sweep: str | None = None,
    metric: str | None = None,
    force: bool = False,
    dry_run: bool = False,
    await_seconds: int = 300,
    max_params: int | None = None,
    confidence: float = CONFIDENCE,
    seed_noise: float | None = None,
) -> Promotion:
    """Plan, then (unless dry_run) register the serving model and move the aliases, all under the store's
    promotion lock. Raises PromotionRefused."""
    if not 0.0 <= confidence <= 1.0:
        raise ConfigError(f"--confidence {confidence}: a probability in [0, 1] (default {CONFIDENCE})")
    try:
        given_noise(seed_noise)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    limit = MAX_PARAMS if max_params is None else max_params
    if dry_run:
        p, _ = plan(client, experiment, name, sweep, metric, force, limit, confidence, seed_noise)
        p.notes.append("dry run: nothing changed")
        if p.decision == "promote":
            p.decision = "dry-run"
        return p
    with promotion_lock(getattr(client, "_registry_uri", None) or mlflow_registry_uri()):
        p, best = plan(client, experiment, name, sweep, metric, force, limit, confidence, seed_noise)
        if p.decision == "refused":
            raise PromotionRefused(f"promotion refused: {p.reason}", p)
        serving_uri = ensure_serving_model(client, best.run_id)
        mv = _register(client, name, serving_uri, version_tags(p, best), await_seconds)
        _move_aliases(client, p, str(mv.version))
        _write_card(client, name, str(mv.version), best)
        _log_comparison(client, p, best)
    p.version = str(mv.version)
    p.decision = "promoted"
    return p


def mlflow_registry_uri() -> str:
    import mlflow

    return mlflow.get_registry_uri()


def _move_aliases(client, p: Promotion, version: str) -> None:
    """@previous -> the old champion, then @champion -> `version`, if @champion still names the version the plan
    compared with (else another promotion won meanwhile: this version is removed and nothing moves)."""
    name = p.model_name
    now = current_champion(client, name, p.metric)
    planned = p.champion.version if p.champion else None
    if (now.version if now else None) != planned:
        try:
            client.delete_model_version(name, version)
        except Exception as exc:
            log.warning("could not remove %s v%s: %s", name, version, first_line(exc))
        raise PromotionRefused(
            f"promotion refused: another promotion moved @{rf.CHAMPION} to v{now.version if now else None} while "
            f"this one ran (it planned against {'v' + planned if planned else 'no champion'}); nothing changed, "
            "run promote again to compare with the new champion",
            p,
        )
    try:
        if p.champion is not None and p.champion.version != version:
            client.set_registered_model_alias(name, rf.PREVIOUS, p.champion.version)
        client.set_registered_model_alias(name, rf.CHAMPION, version)
    except Exception as exc:
        raise RegistryError(
            f"registered v{version} but could not move @{rf.CHAMPION} to it "
            f"({first_line(exc)}); @{rf.CHAMPION} still names the old version"
        ) from exc


def _log_comparison(client, p: Promotion, best: RunRow) -> None:
    """The gate's evidence in the promoted run, beside its model card (best-effort, like the card)."""
    if p.comparison is None:
        return
    try:
        client.log_dict(
            best.run_id, {**p.comparison, "champion_version": p.champion and p.champion.version}, COMPARISON_ARTIFACT
        )
    except Exception as exc:
        log.warning("promotion comparison for run %s not logged: %s", best.run_id, first_line(exc))


def version_tags(p: Promotion, best: RunRow) -> dict[str, str]:
    tags = {
        rf.SOURCE_RUN_ID: best.run_id,
        rf.SWEEP: p.candidate.sweep or "",
        rf.METRIC: p.metric,
        rf.METRIC_VALUE: repr(p.candidate.value),
        rf.DIRECTION: p.direction,
        rf.SPLIT_ID: best.split_id or "",
        rf.DATASET_ID: best.tags.get(rf.DATASET_ID, ""),
        rf.PROMOTION_REASON: p.reason[:4000],
        rf.FORCED: str(p.forced).lower(),
        rf.REPLACED_VERSION: (p.champion.version or "") if p.champion else "",
        rf.PROMOTED_AT: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    # A short set (the registry page showed 33 metric.* tags): the promotion metric, balanced accuracy and macro F1,
    # each on validation and test, and the promotion metric's 95% interval; the run has every other figure.
    bases = {rf.base_name(p.metric), "balanced_accuracy", "macro_f1"}
    headline = {rf.metric(section, b) for b in bases for section in (rf.FINAL_VAL, rf.TEST)}
    headline |= {rf.canonical(p.metric) + "_lo95", rf.canonical(p.metric) + "_hi95"}
    if p.comparison is not None:
        tags[COMPARISON_TAG] = json.dumps(p.comparison)[:4000]
    for key, value in best.results().items():
        if key in headline:
            tags[f"{rf.VERSION_METRIC}{key}"] = repr(float(value))
    return tags


def _write_card(client, name: str, version: str, best: RunRow) -> None:
    """The model card, as the version's description and in the run; best-effort: a card never blocks a promotion."""
    try:
        meta = resolve(f"runs:/{best.run_id}/{rf.MODEL}", client).meta
        card = model_card(name, version, best, meta, from_run(client.get_run(best.run_id)))  # ensembles: inputs
        client.update_model_version(name, version, description=card)
        client.log_text(best.run_id, card, rf.MODEL_CARD)
    except Exception as exc:
        log.warning("model card for %s v%s not written: %s", name, version, first_line(exc))


def _register(client, name: str, source_uri: str, tags: dict, await_seconds: int):
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mv = mlflow.register_model(source_uri, name, await_registration_for=await_seconds, tags=tags)
    except MlflowException as exc:
        raise RegistryError(f"could not register {source_uri} as {name}: {first_line(exc)}") from exc
    deadline = time.monotonic() + await_seconds
    while True:
        mv = client.get_model_version(name, mv.version)
        if mv.status == "READY":
            return mv
        if mv.status == "FAILED_REGISTRATION" or time.monotonic() > deadline:
            try:
                client.delete_model_version(name, mv.version)
            except MlflowException:
                pass
            raise RegistryError(
                f"version {mv.version} of {name} did not become READY (status {mv.status}); "
                f"removed it, @{rf.CHAMPION} unchanged"
            )
        time.sleep(1)
