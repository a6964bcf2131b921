"""What an ensemble is scored and logged with besides its members' logged logits: the first member's data, rebuilt
from its config. Members with a validation split share it; cross-validations on the same folds share their
out-of-fold rows (every train + validation image: ids and lesions as the CV logged them, its folds for cross-fitting),
and their first fold's data holds the test part they all left out."""

from __future__ import annotations

from dataclasses import dataclass

import mlflow
import numpy as np
import pandas as pd

from ..data import Prepared
from ..errors import DataError
from ..tracking import run_format as rf
from ..tracking.store import first_line
from ..training.ship import lesion_groups, priors
from ..training.ship_record import LoggedViews
from .labelled_data import rebuild_run_data
from .ranking import RunRow


@dataclass
class EnsembleData:
    """What the ensemble is scored and logged with, beside its members' logged logits."""

    prepared: Prepared  # the first member's data (a cross-validation's: its first fold's, for the test part)
    image_ids: dict[str, np.ndarray]  # "val" / "test", in the order of the logits
    groups: dict[str, np.ndarray | None]
    train_priors: np.ndarray  # what the prior adjustment moves from
    check_part: str  # where the wrapped model is checked against the logits: a CV has no val images at hand
    splits: dict[str, pd.DataFrame]  # what log_splits records
    fold_of_row: np.ndarray | None = None  # out of fold: each validation row's fold (its figures are cross-fitted)


def data_of(first: RunRow, logged: LoggedViews, height: int, width: int, num_classes: int) -> EnsembleData:
    """`first`: the first member's run, `logged`: what it logged of its predictions."""
    if not rf.is_cross_validation(first.tags):
        prepared, _ = rebuild_run_data(first.run_id, height, width)
        ids = {part: getattr(prepared.split, part)["image_id"].to_numpy() for part in ("val", "test")}
        splits = {"train": prepared.split.train, "validation": prepared.split.val, "test": prepared.split.test}
        priors_ = priors(prepared.y["train"], num_classes)
        return EnsembleData(prepared, ids, lesion_groups(prepared), priors_, "val", splits)
    # out of fold: every train + validation image is the ensemble's validation (ids and lesions as the CV logged
    # them), and the prior is theirs, as for the CV's own bag; the first fold's data holds the shared test part
    prepared, _ = rebuild_run_data(first.run_id, height, width, fold=0)
    ids = {"val": logged.image_ids["val"], "test": prepared.split.test["image_id"].to_numpy()}
    groups = {"val": logged.groups.get("val"), "test": prepared.split.test["group"].to_numpy()}
    out_of_fold = pd.concat([prepared.split.train, prepared.split.val], ignore_index=True)
    splits = {"validation": out_of_fold, "test": prepared.split.test}
    folds = _folds_table(first.run_id)
    fold_of = dict(zip(folds["image_id"].astype(str), folds["fold"], strict=True))
    fold_of_row = np.array([fold_of[str(i)] for i in ids["val"]])
    return EnsembleData(prepared, ids, groups, priors(logged.labels["val"], num_classes), "test", splits, fold_of_row)


def _folds_table(run_id: str) -> pd.DataFrame:
    try:
        return pd.read_csv(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=rf.FOLDS_TABLE))
    except Exception as exc:
        raise DataError(f"cross-validation {run_id} has no readable {rf.FOLDS_TABLE} ({first_line(exc)})") from exc
