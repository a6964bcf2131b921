"""The experiment's kind tag: MLflow 3's UI picks an experiment's landing page from `mlflow.experimentKind`, and
without it may open on the GenAI overview (traces, token usage). dermsweep's experiments are classic model
development: they open on the runs list."""

from __future__ import annotations

from typing import Any

KIND_TAG = "mlflow.experimentKind"
CLASSIC_ML = "custom_model_development"


def tags() -> dict[str, str]:
    """Tags for a new experiment."""
    return {KIND_TAG: CLASSIC_ML}


def mark(client: Any, experiment: Any) -> None:
    """Tag an existing experiment (an entity with .tags) that has no kind yet; one that has one keeps it."""
    if not (getattr(experiment, "tags", None) or {}).get(KIND_TAG):
        client.set_experiment_tag(experiment.experiment_id, KIND_TAG, CLASSIC_ML)


# MLflow 3.17.2's UI has a GenAI / Model training switch that overrides the tag: a browser's first visit is GenAI
# (the overview of traces) unless the link asks. Every link dermsweep prints carries this.
UI_QUERY = "?workflowType=machine_learning"
