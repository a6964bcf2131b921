"""Every headline figure carries its 95% bootstrap interval: a training run's final_val/test metrics and operating
point, the evidence behind each gain, the shipped probabilities the promotion gate pairs, and `dermsweep evaluate`."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest

from dermsweep.evaluation.metrics import scores
from dermsweep.shipping.evaluate import score
from dermsweep.shipping.labelled_data import Labelled
from dermsweep.tracking import run_format as rf
from dermsweep.tracking.model_ref import ModelRef
from helpers.predictions import probs_of, real_shaped


def test_a_run_logs_intervals_gain_evidence_and_its_shipped_probabilities(smoke_run):
    from dermsweep.training.ship_record import read_view_logits

    client = mlflow.MlflowClient(smoke_run["uri"])
    r = client.get_run(smoke_run["run_id"])
    m = r.data.metrics
    for section in (rf.FINAL_VAL, rf.TEST):
        for name in ("balanced_accuracy", "macro_f1", "macro_auc"):
            key = rf.metric(section, name)
            assert m[key + "_lo95"] <= m[key] <= m[key + "_hi95"], key
    if rf.metric(rf.OPERATING_POINT, "val_sensitivity") in m:
        key = rf.metric(rf.OPERATING_POINT, "val_sensitivity")
        assert m[key + "_lo95"] <= m[key] <= m[key + "_hi95"]
    report = json.loads(Path(client.download_artifacts(smoke_run["run_id"], rf.GAINS_REPORT)).read_text())
    # views were chosen among none, flips and dihedral (auto): each costlier set's paired bootstrap is on record
    assert {e["key"] for e in report["evidence_val"]} >= {"views_flips", "views_dihedral"}
    for e in report["evidence_val"]:
        assert 0 <= e["p_better"] <= 1 and e["lo"] <= e["hi"] and e["taken"] in (True, False)
        assert rf.metric(rf.GAINS, f"{e['key']}_p_better") in m
    logged = read_view_logits(client.download_artifacts(smoke_run["run_id"], rf.VIEW_LOGITS))
    y, probs = logged.labels["val"], logged.probabilities["val"]
    assert scores(y, probs)["balanced_accuracy"] == pytest.approx(m[rf.metric(rf.FINAL_VAL, "balanced_accuracy")])
    assert len(logged.image_ids["val"]) == len(logged.groups["val"]) == len(y)


def test_evaluate_reports_and_logs_intervals():
    y, lesions, look, rng = real_shaped(n=600)
    probs = probs_of(y, lesions, look, rng, 1.5)
    names = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    found = Labelled(np.zeros((len(y), 1, 1, 3), np.uint8), y, "/x", image_ids=[f"i{i}" for i in range(len(y))])
    report = score(found, probs, ModelRef("m.keras", meta={"class_names": names}), "/x")
    for key in ("balanced_accuracy", "macro_f1", "macro_auc", "mel_sensitivity", "mel_specificity"):
        lo, hi = report.intervals[key]
        assert lo <= report.metrics[key] <= hi, key
    json.dumps(report.to_json(), allow_nan=False)
    from dermsweep.shipping.evaluate import _metrics

    logged = _metrics(report)
    assert logged["eval/balanced_accuracy_lo95"] == report.intervals["balanced_accuracy"][0]
