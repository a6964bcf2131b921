"""The fold-racing pruner: a cross-validation trial stops after a fold only when it is clearly behind the best."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from dermsweep.sweep.fold_racing import FoldRacingPruner, fold_values

optuna.logging.set_verbosity(optuna.logging.WARNING)


def _running(folds: list[float]) -> dict[int, float]:
    return {i: float(np.mean(folds[: i + 1])) for i in range(len(folds))}


def _study(finished: list[list[float]], direction: str = "maximize", **pruner) -> optuna.Study:
    study = optuna.create_study(direction=direction, pruner=FoldRacingPruner(**pruner))
    for folds in finished:
        study.add_trial(optuna.trial.create_trial(value=float(np.mean(folds)), intermediate_values=_running(folds)))
    return study


def _after(study: optuna.Study, folds: list[float]) -> bool:
    trial = study.ask()
    for step, value in _running(folds).items():
        trial.report(value, step)
    return trial.should_prune()


def test_fold_values_are_recovered_from_running_means():
    folds = [0.61, 0.7, 0.64, 0.68, 0.66]
    trial = optuna.trial.create_trial(value=0.658, intermediate_values=_running(folds))
    assert fold_values(trial) == pytest.approx(folds)
    epochs = optuna.trial.create_trial(value=0.5, intermediate_values={3: 0.5, 5: 0.6})
    assert fold_values(epochs) == []


FINISHED = [[0.70, 0.74, 0.68, 0.72, 0.71], [0.66, 0.70, 0.65, 0.69, 0.67]]  # fold spread ~0.02


def test_a_trial_far_behind_after_one_fold_is_pruned_a_close_one_is_not():
    assert _after(_study(FINISHED), [0.55])  # 16 points behind the best's 0.71: stop
    assert not _after(_study(FINISHED), [0.69])  # within the noise of one fold: run on
    assert not _after(_study(FINISHED), [0.75])


def test_more_folds_narrow_the_margin():
    # 3 points behind: not clear after one fold, clear after four folds at that level
    assert not _after(_study(FINISHED), [0.68])
    assert _after(_study(FINISHED), [0.68, 0.68, 0.68, 0.68])


def test_a_trial_level_with_the_best_on_the_same_fold_is_not_pruned_for_the_folds_difficulty():
    """The real search's case: the best's first fold was its hardest (0.554 against a mean of 0.567); a trial at 0.535
    on that fold is 1.9 points behind it there, inside one fold's noise with three folds' spread (2 dof) to go on.
    The unpaired rule with a normal quantile pruned it; a trial far behind on the same fold is still pruned."""
    best = [[0.554, 0.576, 0.572]]
    assert not _after(_study(best), [0.535])
    assert _after(_study(best), [0.49])
    assert not _after(_study(best), [0.535, 0.575])  # level on fold 2: the pair's mean is 1 point behind


def test_minimising_and_the_start_up_rule():
    losses = [[0.9, 0.95, 0.88], [1.0, 1.05, 0.98]]
    assert _after(_study(losses, direction="minimize"), [1.4])
    assert not _after(_study(losses, direction="minimize"), [0.93])
    assert not _after(_study(FINISHED[:1], n_startup_trials=2), [0.3])  # one finished trial is not enough
    assert not _after(_study([]), [0.1])


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="confidence"):
        FoldRacingPruner(confidence=1.0)
    with pytest.raises(ValueError, match="n_startup_trials"):
        FoldRacingPruner(n_startup_trials=0)


def test_a_sweep_naming_the_racing_pruner_gets_no_warning_for_keys_it_never_wrote(tmp_path, caplog):
    """Hydra merges a sweep file's pruner over the sweeper's default (MedianPruner's n_warmup_steps ...): those
    inherited keys are dropped quietly; a key the user did write and the class does not take is still said."""
    from hydra_plugins.dermsweep_optuna_sweeper import _study
    from hydra_plugins.dermsweep_optuna_sweeper.config import DEFAULT_PRUNER

    racing = {**DEFAULT_PRUNER, "_target_": "dermsweep.sweep.fold_racing.FoldRacingPruner", "confidence": 0.9}
    settings = _study.StudySettings("quiet", f"journal://{tmp_path}/o.log", ["maximize"], racing)
    with caplog.at_level("WARNING"):
        opened = _study.open_study(settings, {"_target_": "optuna.samplers.RandomSampler"}, {})
    assert isinstance(opened.study.pruner, FoldRacingPruner)
    assert opened.study.pruner.n_startup_trials == DEFAULT_PRUNER["n_startup_trials"]  # a key it takes is kept
    assert "does not take" not in caplog.text

    written = {**racing, "n_warmup_steps": 3}
    settings = _study.StudySettings("said", f"journal://{tmp_path}/p.log", ["maximize"], written)
    with caplog.at_level("WARNING"):
        _study.open_study(settings, {"_target_": "optuna.samplers.RandomSampler"}, {})
    assert "FoldRacingPruner does not take ['n_warmup_steps']: ignored" in caplog.text
