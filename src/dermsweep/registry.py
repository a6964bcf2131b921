"""Pick the best run, gate it against the current champion, register it and move the aliases.

Promotion registers a pyfunc "serving" model (dermsweep.serving: base64 images in, probabilities out) that
`promote` logs into the winning run beside the Keras model the run logged. `mlflow models serve` serves it as is,
and `model_io` gets the Keras model back out of it for export and predict.

Registry safety: the aliases move only after the new version is READY; `previous` is set (to the old champion)
before `champion` moves, so at every instant `@champion` names a complete version. A failure before that leaves
the old champion in place and removes the half-made version.
"""
from __future__ import annotations

import base64
import io
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import DermsweepError
from .model_io import DEFAULT_MODEL_NAME, RUN_ID, _first_line, logged_models_of_run, resolve

CHAMPION, PREVIOUS = "champion", "previous"
SERVING_NAME = "serving"
DEFAULT_OBJECTIVE = "val_balanced_accuracy"


class RegistryError(DermsweepError):
    """The Model Registry could not be read or changed as asked."""


class NoEligibleRun(DermsweepError):
    """No finished run with a logged model and the metric to rank by."""


class PromotionRefused(DermsweepError):
    """The gate said no: the candidate is not better, or not comparable, than the current champion."""

    def __init__(self, message: str, promotion: Promotion | None = None):
        super().__init__(message)
        self.promotion = promotion


# ---------------------------------------------------------------- runs
@dataclass
class RunRow:
    run_id: str
    name: str
    status: str
    role: str
    metrics: dict[str, float]
    params: dict[str, str]
    tags: dict[str, str]
    start_time: int
    has_model: bool = False

    @property
    def split_id(self) -> str | None:
        return self.tags.get("dermsweep.split_id")


@dataclass
class RunsTable:
    experiment: str
    sweep: str | None
    metric: str
    direction: str
    rows: list[RunRow]
    differing: list[str]              # param keys whose values differ between the rows

    def to_json(self) -> dict:
        return {
            "experiment": self.experiment, "sweep": self.sweep, "metric": self.metric, "direction": self.direction,
            "differing_params": self.differing,
            "runs": [{"run_id": r.run_id, "name": r.name, "status": r.status, "role": r.role,
                      "has_model": r.has_model, "split_id": r.split_id, "metric": _num(r.metrics.get(self.metric)),
                      "metrics": {k: _num(v) for k, v in sorted(r.metrics.items())
                                  if k.startswith(("final_", "test_"))},
                      "params": {k: r.params.get(k) for k in self.differing}} for r in self.rows],
        }


def _num(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else v


def normalise_metric(metric: str | None) -> str | None:
    """`val_macro_f1` -> `final_val_macro_f1`; `final_...` and `test_...` pass through."""
    if not metric:
        return None
    return metric if metric.startswith(("final_", "test_")) else f"final_{metric}"


def direction_of(metric: str, rows: list[RunRow]) -> str:
    base = metric.removeprefix("final_").removeprefix("test_")
    for r in rows:
        if r.tags.get("dermsweep.objective_metric") == base.replace("test_", "val_") and \
                r.tags.get("dermsweep.objective_direction") in ("maximize", "minimize"):
            return r.tags["dermsweep.objective_direction"]
    return "minimize" if base.endswith("loss") else "maximize"


def _experiment(client, experiment: str):
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        names = ", ".join(e.name for e in client.search_experiments(max_results=20)) or "none"
        raise NoEligibleRun(f"no experiment named {experiment!r} in this tracking store (experiments: {names})")
    return exp


def _sweep_filter(client, exp_id: str, sweep: str) -> tuple[str, str]:
    """Filter string selecting a sweep's trials, and a readable label. sweep = parent run id or study name."""
    if RUN_ID.match(sweep):
        return f"tags.mlflow.parentRunId = '{sweep}'", f"sweep run {sweep}"
    found = client.search_runs([exp_id], filter_string=f"tags.`dermsweep.study_name` = '{sweep}'", max_results=1)
    if not found:
        raise NoEligibleRun(f"no sweep {sweep!r}: give a sweep's parent run id or its study name "
                            "(`dermsweep runs` shows study names)")
    return f"tags.`dermsweep.study_name` = '{sweep}'", f"study {sweep}"


def collect_runs(client, experiment: str, sweep: str | None = None, metric: str | None = None,
                 finished_only: bool = False) -> RunsTable:
    """All trial/single runs of the experiment (or sweep), best first by `metric` (default: the objective)."""
    exp = _experiment(client, experiment)
    filters = ["tags.`dermsweep.role` != 'sweep'"]
    if sweep:
        filters.append(_sweep_filter(client, exp.experiment_id, sweep)[0])
    if finished_only:
        filters.append("tags.`dermsweep.status` = 'finished'")
    try:
        runs = client.search_runs([exp.experiment_id], filter_string=" and ".join(filters), max_results=5000)
    except Exception as exc:  # noqa: BLE001
        raise RegistryError(f"cannot search runs: {_first_line(exc)}") from exc
    rows = [RunRow(r.info.run_id, r.info.run_name or "", r.data.tags.get("dermsweep.status", r.info.status.lower()),
                   r.data.tags.get("dermsweep.role", ""), dict(r.data.metrics), dict(r.data.params),
                   dict(r.data.tags), r.info.start_time or 0) for r in runs]
    if rows:
        modelled = _runs_with_model(client, exp.experiment_id)
        for r in rows:
            r.has_model = r.run_id in modelled
    if metric is None:
        objectives = [r.tags.get("dermsweep.objective_metric") for r in rows if r.tags.get("dermsweep.objective_metric")]
        metric = max(set(objectives), key=objectives.count) if objectives else DEFAULT_OBJECTIVE
    metric = normalise_metric(metric)
    direction = direction_of(metric, rows)
    sign = -1.0 if direction == "maximize" else 1.0

    def key(r: RunRow):
        v = r.metrics.get(metric)
        missing = v is None or math.isnan(v)
        return (missing, 0.0 if missing else sign * v, r.start_time)

    rows.sort(key=key)
    differing = _differing_params(rows)
    return RunsTable(experiment, sweep, metric, direction, rows, differing)


def _runs_with_model(client, experiment_id: str) -> set[str]:
    import mlflow

    try:
        models = mlflow.search_logged_models(experiment_ids=[experiment_id], filter_string="name = 'model'",
                                             output_format="list")
    except Exception:  # noqa: BLE001 - older servers: fall back to "unknown" = assume present
        return set()
    return {m.source_run_id for m in models if m.source_run_id}


def _differing_params(rows: list[RunRow]) -> list[str]:
    keys = sorted({k for r in rows for k in r.params})
    skip = ("tracking.", "hydra.", "run_name", "git.", "model.params", "provenance.", "host.")
    return [k for k in keys if not k.startswith(skip) and len({r.params.get(k) for r in rows}) > 1]


# ---------------------------------------------------------------- promotion
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
    decision: str = "pending"          # promoted | refused | dry-run
    reason: str = ""
    forced: bool = False
    version: str | None = None
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        def side(s):
            return None if s is None else s.__dict__

        return {"model_name": self.model_name, "metric": self.metric, "direction": self.direction,
                "candidate": side(self.candidate), "champion": side(self.champion), "decision": self.decision,
                "reason": self.reason, "forced": self.forced, "version": self.version, "notes": self.notes}


def best_candidate(client, experiment: str, sweep: str | None = None, metric: str | None = None) -> tuple[RunRow, RunsTable]:
    table = collect_runs(client, experiment, sweep, metric, finished_only=True)
    eligible = [r for r in table.rows if r.has_model and _num(r.metrics.get(table.metric)) is not None]
    if not eligible:
        scope = f"sweep {sweep!r}" if sweep else f"experiment {experiment!r}"
        raise NoEligibleRun(
            f"no eligible run in {scope}: need tag dermsweep.status=finished, a logged model and metric "
            f"{table.metric} ({len(table.rows)} finished run(s), "
            f"{sum(r.has_model for r in table.rows)} with a model)")
    return eligible[0], table


def current_champion(client, name: str, metric: str) -> Side | None:
    from mlflow.exceptions import MlflowException

    try:
        mv = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException as exc:
        if "RESOURCE_DOES_NOT_EXIST" in str(getattr(exc, "error_code", "")) or "not found" in str(exc).lower() \
                or "does not exist" in str(exc).lower():
            return None
        raise RegistryError(f"cannot read models:/{name}@{CHAMPION}: {_first_line(exc)}") from exc
    tags = dict(mv.tags or {})
    value = None
    if tags.get(f"metric.{metric}") is not None:
        value = float(tags[f"metric.{metric}"])
    split_id = tags.get("dermsweep.split_id")
    if mv.run_id and (value is None or split_id is None):
        try:
            run = client.get_run(mv.run_id)
            value = run.data.metrics.get(metric) if value is None else value
            split_id = split_id or run.data.tags.get("dermsweep.split_id")
        except MlflowException:
            pass
    return Side(mv.run_id, value, split_id, version=str(mv.version), name=name, sweep=tags.get("dermsweep.sweep"))


def better(a: float, b: float, direction: str) -> bool:
    return a > b if direction == "maximize" else a < b


def plan(client, experiment: str, name: str = DEFAULT_MODEL_NAME, sweep: str | None = None,
         metric: str | None = None, force: bool = False) -> tuple[Promotion, RunRow]:
    """Decide without changing anything. decision is 'promote' or 'refused' (with the reason)."""
    best, table = best_candidate(client, experiment, sweep, metric)
    sweep_ref = best.tags.get("mlflow.parentRunId") or best.tags.get("dermsweep.study_name")
    cand = Side(best.run_id, best.metrics[table.metric], best.split_id, name=best.name, sweep=sweep_ref)
    champ = current_champion(client, name, table.metric)
    p = Promotion(name, table.metric, table.direction, cand, champ, forced=force)
    fmt = "{:.4f}".format
    above = [r for r in table.rows[:table.rows.index(best)] if not r.has_model]
    if above:
        p.notes.append(
            f"{len(above)} finished run(s) rank above it by {table.metric} but logged no model (e.g. {above[0].name}, "
            f"{above[0].run_id}): sweeps with tracking.log_model=improving keep models only for trials that beat "
            "the sweep's best on its objective; re-run them with tracking.log_model=always to make them eligible")
    if champ is None:
        p.decision, p.reason = "promote", f"first champion of {name}: best {table.metric} = {fmt(cand.value)}"
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
            "(re-train both on one split, or use --force if you accept that)")
    elif not better(cand.value, champ.value, table.direction):
        problems.append(
            f"candidate {table.metric} = {fmt(cand.value)} is not better than champion v{champ.version}'s "
            f"{fmt(champ.value)} ({table.direction}, same split {cand.split_id})")
    if problems and not force:
        p.decision, p.reason = "refused", "; ".join(problems)
    elif problems:
        p.decision, p.reason = "promote", "forced over: " + "; ".join(problems)
    else:
        p.decision = "promote"
        p.reason = (f"{table.metric} {fmt(cand.value)} beats champion v{champ.version}'s {fmt(champ.value)} "
                    f"on split {cand.split_id}")
    return p, best


def promote(client, experiment: str, name: str = DEFAULT_MODEL_NAME, sweep: str | None = None,
            metric: str | None = None, force: bool = False, dry_run: bool = False,
            await_seconds: int = 300) -> Promotion:
    """Plan, then (unless dry_run) register the serving model and move the aliases. Raises PromotionRefused."""
    p, best = plan(client, experiment, name, sweep, metric, force)
    if dry_run:
        p.notes.append("dry run: nothing changed")
        if p.decision == "promote":
            p.decision = "dry-run"
        return p
    if p.decision == "refused":
        raise PromotionRefused(f"promotion refused: {p.reason}", p)

    serving_uri = ensure_serving_model(client, best)
    tags = version_tags(p, best)
    mv = _register(client, name, serving_uri, best.run_id, tags, await_seconds)
    try:
        if p.champion is not None and p.champion.version != str(mv.version):
            client.set_registered_model_alias(name, PREVIOUS, p.champion.version)
        client.set_registered_model_alias(name, CHAMPION, str(mv.version))
    except Exception as exc:  # noqa: BLE001
        raise RegistryError(f"registered v{mv.version} but could not move @{CHAMPION} to it "
                            f"({_first_line(exc)}); @{CHAMPION} still names the old version") from exc
    p.version = str(mv.version)
    p.decision = "promoted"
    return p


def version_tags(p: Promotion, best: RunRow) -> dict[str, str]:
    tags = {
        "dermsweep.source_run_id": best.run_id,
        "dermsweep.sweep": p.candidate.sweep or "",
        "dermsweep.metric": p.metric,
        "dermsweep.metric_value": repr(p.candidate.value),
        "dermsweep.direction": p.direction,
        "dermsweep.split_id": best.split_id or "",
        "dermsweep.dataset_id": best.tags.get("dermsweep.dataset_id", ""),
        "dermsweep.promotion_reason": p.reason[:4000],
        "dermsweep.forced": str(p.forced).lower(),
        "dermsweep.replaced_version": p.champion.version if p.champion else "",
        "dermsweep.promoted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    for k, v in best.metrics.items():
        if k.startswith(("final_", "test_")) and _num(v) is not None:
            tags[f"metric.{k}"] = repr(float(v))
    return tags


def _register(client, name: str, source_uri: str, run_id: str, tags: dict, await_seconds: int):
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        mv = mlflow.register_model(source_uri, name, await_registration_for=await_seconds, tags=tags)
    except MlflowException as exc:
        raise RegistryError(f"could not register {source_uri} as {name}: {_first_line(exc)}") from exc
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
            raise RegistryError(f"version {mv.version} of {name} did not become READY (status {mv.status}); "
                                f"removed it, @{CHAMPION} unchanged")
        time.sleep(1)


# ---------------------------------------------------------------- serving model
def ensure_serving_model(client, best: RunRow) -> str:
    """models:/<id> of the run's pyfunc serving model, logging it into the run first if it has none."""
    exp_id = client.get_run(best.run_id).info.experiment_id
    existing = [m for m in logged_models_of_run(client, exp_id, best.run_id)
                if m.name == SERVING_NAME and str(getattr(m, "status", "READY")).upper().endswith("READY")]
    if existing:
        existing.sort(key=lambda m: m.creation_timestamp or 0)
        return f"models:/{existing[-1].model_id}"
    return log_serving_model(best.run_id, client)


def log_serving_model(run_id: str, client=None) -> str:
    """Log dermsweep.serving (models from code) into `run_id`, wrapping the run's Keras model. Returns its URI."""
    import numpy as np
    import pandas as pd
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema
    from PIL import Image

    import mlflow.pyfunc

    # Paths, not imports: importing serving.py would run its set_model() here for nothing.
    serving_py = Path(__file__).with_name("serving.py")
    images_py = Path(__file__).parent / "data" / "images.py"

    ref = resolve(f"runs:/{run_id}/model", client)
    if "class_names" not in ref.meta or "input_height" not in ref.meta:
        raise RegistryError(f"run {run_id}'s model has no metadata (class_names, input_height, input_width)")
    h, w = ref.input_size
    with tempfile.TemporaryDirectory() as tmp:
        info = Path(tmp) / "model_info.json"
        info.write_text(json.dumps(ref.meta, indent=2))
        buf = io.BytesIO()
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
        example = pd.DataFrame({"image": [base64.b64encode(buf.getvalue()).decode()]})
        meta: dict[str, Any] = dict(ref.meta, keras_model_uri=f"models:/{ref.model_id}", input="base64 image")
        # Created explicitly so it belongs to the run's experiment (not whatever experiment is active here).
        from mlflow.entities import LoggedModelStatus

        client = client or mlflow.MlflowClient()
        exp_id = client.get_run(run_id).info.experiment_id
        lm = client.create_logged_model(exp_id, name=SERVING_NAME, source_run_id=run_id,
                                        tags={"dermsweep.role": "serving", "dermsweep.keras_model": str(ref.model_id)})
        try:
            logged = Model.log(
                artifact_path=None, name=SERVING_NAME, flavor=mlflow.pyfunc, run_id=run_id, model_id=lm.model_id,
                python_model=str(serving_py),
                artifacts={"keras_model": str(ref.keras_path), "model_info": str(info)},
                code_paths=[str(images_py)],
                signature=ModelSignature(inputs=Schema([ColSpec("string", "image")])),
                input_example=example, pip_requirements=_requirements(), metadata=meta,
            )
        except Exception as exc:  # noqa: BLE001
            client.finalize_logged_model(lm.model_id, LoggedModelStatus.FAILED)
            raise RegistryError(f"could not log the serving model into run {run_id}: {_first_line(exc)}") from exc
    if str(client.get_logged_model(lm.model_id).status) != "READY":
        client.finalize_logged_model(lm.model_id, LoggedModelStatus.READY)
    return logged.model_uri


def _requirements() -> list[str]:
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist, pkg in (("mlflow", "mlflow"), ("keras", "keras"), ("numpy", "numpy"), ("pillow", "pillow"),
                      ("pandas", "pandas"), ("tensorflow-cpu", "tensorflow-cpu"), ("tensorflow", "tensorflow")):
        try:
            reqs.append(f"{pkg}=={version(dist)}")
        except PackageNotFoundError:
            continue
    if any(r.startswith("tensorflow-cpu") for r in reqs):
        reqs = [r for r in reqs if not r.startswith("tensorflow==")]
    return reqs
