"""The promotion gate on small, real-shaped data: candidate and champion paired on their shared validation images;
a candidate within the noise is refused with its difference and interval, a clearly better one promoted; two
promotions started at the same instant cannot both win."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pytest

from dermsweep.evaluation.metrics import scores
from dermsweep.shipping import promotion
from dermsweep.shipping.registry_lock import lock_path
from dermsweep.tracking import run_format as rf
from dermsweep.tracking.store import connect
from helpers.config import REPO
from helpers.predictions import probs_of, real_shaped


@pytest.fixture
def client(store, monkeypatch):
    monkeypatch.chdir(store.root)  # artifacts of new experiments land in the temp store
    return connect(store.uri, create=False)


def log_gated_run(model, experiment: str, study: str, y, probs, lesions, split_id: str = "split-g") -> str:
    """A finished run (helpers.shipping.log_run) that also logged view_logits.npz as training does: labels, the
    shipped validation probabilities, image ids and lesion ids. Its objective is what those probabilities score."""
    import mlflow

    from helpers.shipping import log_run

    value = scores(y, probs)["balanced_accuracy"]
    run_id = log_run(model, experiment, value, split_id, study=study, name=study)
    rng = np.random.default_rng(abs(hash(study)) % 2**32)
    order = rng.permutation(len(y))  # each run keeps its own row order: the gate pairs by image id
    arrays = {
        "y_val": y[order],
        "shipped_val": probs[order].astype(np.float32),
        "image_val": np.array([f"ISIC_{i:07d}" for i in order]),
        "group_val": np.array([f"HAM_{g:07d}" for g in lesions[order]]),
        "val_0_0": np.log(probs[order]).astype(np.float32),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(rf.VIEW_LOGITS).name
        np.savez_compressed(path, **arrays)
        mlflow.MlflowClient().log_artifact(run_id, str(path), str(Path(rf.VIEW_LOGITS).parent))
    return run_id


def test_gate_refuses_a_candidate_within_noise_and_promotes_a_clearly_better_one(client, store, capsys):
    experiment, name = f"gate-{uuid.uuid4().hex[:6]}", f"test-{uuid.uuid4().hex[:8]}"
    y, lesions, look, rng = real_shaped()
    champion = probs_of(y, lesions, look, rng, 1.5)
    jitter = np.log(champion) + np.random.default_rng(3).normal(0, 0.15, champion.shape)
    within_noise = np.exp(jitter) / np.exp(jitter).sum(axis=1, keepdims=True)
    if scores(y, within_noise)["balanced_accuracy"] <= scores(y, champion)["balanced_accuracy"]:
        within_noise, champion = champion, within_noise  # the candidate must look better on its point value
    clearly_better = probs_of(y, lesions, look, np.random.default_rng(7), 3.0)
    log_gated_run(store.model, experiment, "champ", y, champion, lesions)
    noisy_id = log_gated_run(store.model, experiment, "noise", y, within_noise, lesions)
    better_id = log_gated_run(store.model, experiment, "better", y, clearly_better, lesions)

    first = promotion.promote(client, experiment, name, sweep="champ")
    assert first.decision == "promoted" and first.version == "1"
    # Within the noise: a higher point value, refused with the difference, its interval and P.
    with pytest.raises(promotion.PromotionRefused, match=r"not clearly better: \+\d+\.\d points \[-\d") as refused:
        promotion.promote(client, experiment, name, sweep="noise")
    p = refused.value.promotion
    assert p is not None and p.candidate.run_id == noisy_id and p.candidate.value > p.champion.value
    assert p.comparison["n_images"] == len(y) and p.comparison["n_groups"] < len(y)  # paired, by lesion
    assert p.comparison["lo"] < 0 < p.comparison["hi"] and p.comparison["p_better"] < 0.9
    # --dry-run shows the comparison; a lower --confidence lets the same candidate through.
    dry = promotion.promote(client, experiment, name, sweep="noise", dry_run=True)
    assert dry.decision == "refused" and dry.comparison == p.comparison
    lenient = promotion.promote(client, experiment, name, sweep="noise", dry_run=True, confidence=0.0)
    assert lenient.decision == "dry-run" and "clearly better" in lenient.reason
    # --force still overrides (dry run: nothing changes)
    assert promotion.promote(client, experiment, name, sweep="noise", dry_run=True, force=True).decision == "dry-run"
    assert str(client.get_model_version_by_alias(name, rf.CHAMPION).version) == "1"

    # Clearly better: promoted, with the evidence on the version and in the run.
    won = promotion.promote(client, experiment, name, sweep="better")
    assert won.decision == "promoted" and won.version == "2" and "clearly better" in won.reason
    assert won.comparison["p_better"] >= 0.9 and won.comparison["lo"] > 0
    tags = client.get_model_version(name, "2").tags
    assert json.loads(tags[promotion.COMPARISON_TAG])["p_better"] == won.comparison["p_better"]
    logged = json.loads(Path(client.download_artifacts(better_id, promotion.COMPARISON_ARTIFACT)).read_text())
    assert logged["champion_version"] == "1" and logged["difference"] > 0
    assert str(client.get_model_version_by_alias(name, rf.PREVIOUS).version) == "1"
    # The command line shows the paired comparison and the one-line reason; a bad --confidence is one line, exit 2.
    from dermsweep import cli

    capsys.readouterr()
    argv = ["promote", "--experiment", experiment, "--name", name, "--sweep", "noise", "--dry-run"]
    assert cli.main(argv) == 3
    out = capsys.readouterr().out
    assert "paired:    candidate - champion" in out and "not clearly better" in out and "P=" in out
    assert cli.main([*argv, "--confidence", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "--confidence 1.5: a probability in [0, 1]" in err and "Traceback" not in err


def test_gate_adds_the_seed_noise_measured_on_the_experiments_repeated_seeds(client, store, capsys):
    """A gain the image bootstrap calls certain is refused when the experiment shows that a rerun with another seed
    moves the score as far; --seed-noise 0 compares images only, as before."""
    from dermsweep import cli
    from helpers.shipping import log_run

    experiment, name = f"seeds-{uuid.uuid4().hex[:6]}", f"test-{uuid.uuid4().hex[:8]}"
    y, lesions, look, rng = real_shaped()
    champion = probs_of(y, lesions, look, rng, 1.5)
    candidate = champion.copy()
    fixed = np.flatnonzero(candidate.argmax(axis=1) != y)[:30]  # 30 wrong images made right: +3.7 points
    candidate[fixed] = np.eye(7)[y[fixed]] * 0.9 + 0.1 / 7
    log_gated_run(store.model, experiment, "champ", y, champion, lesions)
    log_gated_run(store.model, experiment, "cand", y, candidate, lesions)
    for seed, value in ((1, 0.30), (2, 0.34), (3, 0.38)):  # one config, three seeds: 4 points (2 pooled) per run
        log_run(store.model, experiment, value, "split-g", study="seeds", params={"seed": seed, "model.alpha": 0.5})
    assert promotion.promote(client, experiment, name, sweep="champ").decision == "promoted"

    with pytest.raises(promotion.PromotionRefused, match="with 2.0 points of seed noise per run") as refused:
        promotion.promote(client, experiment, name, sweep="cand")
    d = refused.value.promotion.comparison
    # sd 0.04 on 2 dof here, pooled with the default's 0.01 on 8: sqrt((2 * 0.0016 + 8 * 0.0001) / 10) = 0.02
    assert d["training_sd"] == pytest.approx(0.02) and d["training_dof"] == 10 and d["lo"] < 0 < d["difference"]
    assert d["seed_noise"]["source"].startswith("measured: 1 config trained with 2+ seeds here, 3 runs, pooled")
    images_only = promotion.promote(client, experiment, name, sweep="cand", dry_run=True, seed_noise=0)
    assert images_only.decision == "dry-run" and images_only.comparison["lo"] > 0
    assert "seed noise" not in images_only.reason
    # the JSON tells the user's figure from the one used
    assert refused.value.promotion.to_json()["seed_noise_given"] is None
    assert images_only.to_json()["seed_noise_given"] == 0 and images_only.to_json()["comparison"]["training_sd"] == 0

    capsys.readouterr()
    argv = ["promote", "--experiment", experiment, "--name", name, "--sweep", "cand", "--dry-run"]
    assert cli.main(argv) == 3
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines at its width
    assert "noise: images resampled by lesion, and seed noise 2.0 points per run (measured" in out
    assert cli.main([*argv, "--seed-noise", "-1"]) == 2
    assert "--seed-noise -1.0: points of the metric per run, 0 or more" in capsys.readouterr().err


def test_gate_without_paired_predictions_says_it_compared_point_values(client, store):
    name = f"test-{uuid.uuid4().hex[:8]}"
    promotion.promote(client, "dermsweep", name, sweep="study-c")  # fixture runs logged no view_logits.npz
    p = promotion.promote(client, "dermsweep", name, sweep="study-a", dry_run=True)
    assert p.decision == "dry-run" and p.comparison is None
    assert "point values only" in p.reason and any("no paired comparison" in n for n in p.notes)
    # a cross-validation whose fold far below the others is in its bag: the gate says so beside its decision
    client.set_tag(p.candidate.run_id, rf.WEAK_FOLDS, "3")
    p = promotion.promote(client, "dermsweep", name, sweep="study-a", dry_run=True)
    assert any("fold 3 far below its other folds" in n and "in the bag" in n for n in p.notes)
    # ... and one whose weak fold was trained again: its out-of-fold figure holds the retry
    client.set_tag(p.candidate.run_id, rf.RETRIED_FOLDS, "2")
    p = promotion.promote(client, "dermsweep", name, sweep="study-a", dry_run=True)
    assert any("fold 2 trained again with another seed" in n for n in p.notes)


PROMOTE_WHEN_TOLD = """
import json, os, sys, time
from pathlib import Path
from dermsweep.shipping.promotion import PromotionRefused, promote
from dermsweep.tracking.store import connect
client = connect(os.environ["MLFLOW_TRACKING_URI"], create=False)
here = Path(sys.argv[1])
(here / f"ready-{sys.argv[2]}").touch()
while not (here / "go").exists():
    time.sleep(0.001)
try:
    p = promote(client, sys.argv[3], sys.argv[4], sweep=sys.argv[5])
    print(json.dumps({"decision": p.decision, "version": p.version, "reason": p.reason}))
except PromotionRefused as exc:
    print(json.dumps({"decision": "refused", "reason": str(exc)}))
"""


@pytest.mark.faults
def test_two_promotions_started_at_the_same_instant_do_not_both_win(client, store, tmp_path):
    name = f"test-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, MLFLOW_TRACKING_URI=store.uri, PYTHONPATH=str(REPO / "src"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", PROMOTE_WHEN_TOLD, str(tmp_path), str(i), "dermsweep", name, "study-a"],
            cwd=store.root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        deadline = time.monotonic() + 300
        while not all((tmp_path / f"ready-{i}").exists() for i in range(2)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [
                p.communicate() for p in procs if p.poll() is not None
            ]
            time.sleep(0.05)
        (tmp_path / "go").touch()  # both were waiting: they start promoting within a millisecond
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    decisions = sorted(r["decision"] for r in results)
    assert decisions == ["promoted", "refused"], results
    assert any("already the champion" in r["reason"] for r in results), results
    versions = client.search_model_versions(f"name = '{name}'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(client.get_model_version_by_alias(name, rf.CHAMPION).version) == "1"
    assert lock_path(store.uri) is not None and lock_path(store.uri).exists()


def test_a_cross_validation_pairs_with_a_single_run_on_the_single_runs_validation_images():
    """A CV's out-of-fold predictions cover train + validation: the gate pairs them with a single run of the same
    split on that run's validation images, in its order; runs on another split are not paired."""
    import numpy as np

    from dermsweep.shipping.validation_pairs import NotPaired, Predictions, pair

    rng = np.random.default_rng(0)
    ids = np.array([f"img{i:04d}" for i in range(500)])
    labels = rng.integers(0, 3, 500)
    probs = rng.dirichlet(np.ones(3), 500)
    cv = Predictions("cv", labels, probs, ids, None)
    val = np.sort(rng.choice(500, 80, replace=False))[::-1]
    single = Predictions("single", labels[val], probs[val] * 0.5 + 0.1, ids[val], ids[val])
    y, cand, champ, groups = pair(cv, single)
    assert np.array_equal(y, labels[val]) and np.allclose(cand, probs[val]) and np.array_equal(groups, ids[val])
    y2, cand2, champ2, _ = pair(single, cv)  # either way round (then in the CV's order)
    in_cv_order = np.sort(val)
    assert np.array_equal(y2, labels[in_cv_order]) and np.allclose(champ2, probs[in_cv_order])
    other = Predictions("other split", labels[:80], probs[:80], np.array([f"x{i}" for i in range(80)]), None)
    with pytest.raises(NotPaired, match="share 0 of 80"):
        pair(other, single)


def test_runs_paired_tells_which_runs_are_within_the_noise_of_the_best(client, store, capsys):
    """`dermsweep runs --paired`: each run against #1 on the images both scored, by lesion; a run that logged no
    predictions is named with the reason, and a test metric is refused (pairs are on validation only)."""
    from dermsweep import cli
    from helpers.shipping import log_run

    experiment = f"paired-{uuid.uuid4().hex[:6]}"
    y, lesions, look, rng = real_shaped()
    base = probs_of(y, lesions, look, rng, 1.5)
    jitter = np.log(base) + np.random.default_rng(3).normal(0, 0.15, base.shape)
    twin = np.exp(jitter) / np.exp(jitter).sum(axis=1, keepdims=True)
    better = probs_of(y, lesions, look, np.random.default_rng(7), 3.0)
    best_id = log_gated_run(store.model, experiment, "better", y, better, lesions)
    base_id = log_gated_run(store.model, experiment, "base", y, base, lesions)
    twin_id = log_gated_run(store.model, experiment, "twin", y, twin, lesions)
    bare_id = log_run(store.model, experiment, 0.01, "split-g", study="bare", name="bare")  # no predictions

    capsys.readouterr()
    assert cli.main(["runs", "--experiment", experiment, "--paired", "--json"]) == 0
    rows = {r["run_id"]: r["paired_vs_best"] for r in json.loads(capsys.readouterr().out)["runs"]}
    assert rows[best_id] == {"reference": True}
    for run_id in (base_id, twin_id):
        d = rows[run_id]
        assert d["hi"] < 0 and d["lo"] <= d["difference"] <= d["hi"] and d["p_better"] < 0.05
        assert d["n_images"] == len(y) and d["n_groups"] < len(y)  # by lesion
    assert abs(rows[base_id]["difference"] - rows[twin_id]["difference"]) < 0.05
    assert "view_logits" in rows[bare_id]["error"]

    assert cli.main(["runs", "--experiment", experiment, "--paired", "--width", "100"]) == 0
    out = capsys.readouterr().out
    assert "vs #1 [95%]" in out and "(#1)" in out and "by lesion" in out and "not told apart from #1" in out
    assert "with seed noise 1.0 points per run (the HAM10000 default" in out  # every run here has seed 42
    assert f"not paired ({bare_id[:12]}): run {bare_id} has no" in out
    assert max(len(line) for line in out.splitlines() if line.startswith(("#", "-"))) <= 100

    assert cli.main(["runs", "--experiment", experiment, "--paired", "--metric", "test/balanced_accuracy"]) == 2
    assert "rank by a validation metric" in capsys.readouterr().err
    # --seed-noise 0: images only (narrower); it means nothing without --paired.
    assert cli.main(["runs", "--experiment", experiment, "--paired", "--json", "--seed-noise", "0"]) == 0
    narrow = {r["run_id"]: r.get("paired_vs_best") for r in json.loads(capsys.readouterr().out)["runs"]}
    assert narrow[base_id]["hi"] - narrow[base_id]["lo"] < rows[base_id]["hi"] - rows[base_id]["lo"]
    assert narrow[base_id]["training_sd"] == 0 and rows[base_id]["training_sd"] == 0.01
    assert cli.main(["runs", "--experiment", experiment, "--seed-noise", "1"]) == 2
    assert "add --paired" in capsys.readouterr().err
