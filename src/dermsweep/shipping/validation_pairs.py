"""Two runs' shipped predictions on the same validation images, for the promotion gate's paired bootstrap.

Every run logs `evaluation/view_logits.npz` (training.ship_record.log_view_logits): the labels and, since the gate, the
shipped model's probabilities with the image and lesion ids of each row. Two runs on one split hold the same images,
matched here by image id (so the order each run kept does not matter); runs logged before the ids were recorded are
matched by position when their labels agree row for row.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass

import numpy as np

from ..evaluation import bootstrap
from ..tracking import run_format as rf
from ..tracking.store import first_line
from ..training.ship_record import read_view_logits
from .seed_noise import SeedNoise


class NotPaired(Exception):
    """The two runs' validation predictions cannot be paired image by image; the message says why."""


@dataclass(frozen=True)
class Predictions:
    run_id: str
    labels: np.ndarray
    probabilities: np.ndarray
    image_ids: np.ndarray | None
    groups: np.ndarray | None

    def rows(self, index: np.ndarray) -> Predictions:
        """These predictions on the rows `index` only, in that order."""
        return Predictions(
            self.run_id,
            self.labels[index],
            self.probabilities[index],
            None if self.image_ids is None else self.image_ids[index],
            None if self.groups is None else self.groups[index],
        )


def validation_predictions(client, run_id: str) -> Predictions:
    """The shipped model's validation probabilities a run logged (NotPaired when it logged none)."""
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = client.download_artifacts(run_id, rf.VIEW_LOGITS, tmp)
        except Exception as exc:
            raise NotPaired(f"run {run_id} has no {rf.VIEW_LOGITS} ({first_line(exc)})") from exc
        try:
            logged = read_view_logits(path)
        except (OSError, ValueError, KeyError) as exc:
            raise NotPaired(f"run {run_id}'s {rf.VIEW_LOGITS} is unreadable ({first_line(exc)})") from exc
    if "val" not in logged.probabilities or "val" not in logged.labels:
        raise NotPaired(f"run {run_id} logged no shipped validation probabilities (it predates the promotion gate)")
    return Predictions(
        run_id,
        logged.labels["val"],
        logged.probabilities["val"],
        logged.image_ids.get("val"),
        logged.groups.get("val"),
    )


def pair(candidate: Predictions, champion: Predictions) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """(labels, candidate probabilities, champion probabilities, lesion ids) on the images both scored, in the
    champion's order. NotPaired when the images or labels differ."""
    if candidate.probabilities.shape[1] != champion.probabilities.shape[1]:
        raise NotPaired(
            f"the runs predict {candidate.probabilities.shape[1]} and {champion.probabilities.shape[1]} classes"
        )
    if candidate.image_ids is not None and champion.image_ids is not None:
        # Paired on the images both held out: the same split's validation images, or a cross-validation's out-of-fold
        # images (all of train + validation) against a single run's validation part of the same split.
        row = {image_id: i for i, image_id in enumerate(candidate.image_ids)}
        theirs = champion.image_ids.tolist()
        shared = [i for i, image_id in enumerate(theirs) if image_id in row]
        smaller = min(len(row), len(theirs))
        if len(row) != len(candidate.image_ids) or len(shared) < 0.9 * smaller:
            raise NotPaired(
                f"the runs' validation images differ (they share {len(shared)} of {smaller}: another split?)"
            )
        order = np.array([row[theirs[i]] for i in shared], dtype=np.int64)
        champion = champion.rows(np.array(shared, dtype=np.int64))
    elif len(candidate.labels) == len(champion.labels):
        order = np.arange(len(candidate.labels))  # older runs: same split id, same order of the same images
    else:
        raise NotPaired(f"the runs scored {len(candidate.labels)} and {len(champion.labels)} validation images")
    if not np.array_equal(candidate.labels[order], champion.labels):
        raise NotPaired("the runs' validation labels differ image by image")
    groups = champion.groups
    if groups is None and candidate.groups is not None:
        groups = candidate.groups[order]
    return champion.labels, candidate.probabilities[order], champion.probabilities, groups


def compare(
    client, candidate_run: str, champion_run: str, metric: str, direction: str, noise: SeedNoise | None = None
) -> bootstrap.PairedDifference:
    """The paired bootstrap of metric(candidate) - metric(champion) on their shared validation images, by lesion,
    with each run's seed noise when given."""
    return _difference(
        validation_predictions(client, candidate_run),
        validation_predictions(client, champion_run),
        metric,
        direction,
        noise,
    )


def against(
    client, reference_run: str, run_ids: list[str], metric: str, direction: str, noise: SeedNoise | None = None
) -> dict[str, bootstrap.PairedDifference | NotPaired]:
    """Each run's paired difference from `reference_run` (downloaded once), or why it could not be paired.
    NotPaired (raised) when the reference itself logged no predictions to pair with."""
    reference = validation_predictions(client, reference_run)
    out: dict[str, bootstrap.PairedDifference | NotPaired] = {}
    for run_id in run_ids:
        try:
            out[run_id] = _difference(validation_predictions(client, run_id), reference, metric, direction, noise)
        except NotPaired as exc:
            out[run_id] = exc
    return out


def _difference(
    candidate: Predictions, reference: Predictions, metric: str, direction: str, noise: SeedNoise | None
) -> bootstrap.PairedDifference:
    y, cand, ref, groups = pair(candidate, reference)
    sd, dof = (noise.sd, noise.dof) if noise is not None else (0.0, None)
    try:
        return bootstrap.paired(y, cand, ref, rf.base_name(metric), groups, direction, training_sd=sd, training_dof=dof)
    except ValueError as exc:
        raise NotPaired(str(exc)) from exc
