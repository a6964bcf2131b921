"""The MLflow side of a sweep's warm start (hydra.sweeper.warm_start_from): the best candidate runs of an
experiment, with the parameters they were trained with."""

from __future__ import annotations

import math

from ..tracking import run_format as rf
from ..tracking.candidates import candidate_runs

# A trial user attr naming where its enqueued (warm-start) configuration came from; the sweeper sets it.
WARM_START_ATTR = rf.WARM_START


def best_runs(
    uri: str | None,
    experiment: str,
    metric: str,
    direction: str,
    top_k: int,
    filter_string: str | None = None,
) -> list[tuple[str, float, dict[str, str]]]:
    """The ``top_k`` best FINISHED candidate runs (run_format.is_candidate) of an MLflow experiment by ``metric``
    (any spelling rf.read accepts, e.g. val_balanced_accuracy = final_val/balanced_accuracy, else the metric's
    exact name): [(run id, value, params)], best first. Raises ValueError when the experiment does not exist."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise ValueError(f"experiment {experiment!r} not found in the tracking store {client.tracking_uri}")
    wanted = "attributes.status = 'FINISHED'"
    if filter_string:
        wanted = f"{wanted} and {filter_string}"
    found: list[tuple[str, float, dict[str, str]]] = []
    for r in candidate_runs(client, [exp.experiment_id], wanted):
        value = rf.read(r.data.metrics, metric)
        if value is None:
            value = r.data.metrics.get(metric)
        if value is None or not math.isfinite(value):
            continue
        found.append((r.info.run_id, float(value), dict(r.data.params)))
    found.sort(key=lambda x: x[1], reverse=direction == "maximize")
    return found[: max(0, int(top_k))]
