"""The Hydra task: `dermsweep.train` (and the repository's train.py) calls `run(cfg)`.

One tracked run (training/single_run.py), or with `data.split.folds=k` a cross-validation: k fold runs under one
parent whose choices are made out of fold (training/cross_validation.py). Returns the objective for the sweeper.
"""

from __future__ import annotations

from omegaconf import DictConfig

from . import config, cross_validation, single_run


def run(cfg: DictConfig) -> float | dict[str, float]:
    config.validate(cfg)
    if cross_validation.requested(cfg):
        values = cross_validation.run(cfg)
    else:
        values = single_run.train(cfg).values
    if len(values) == 1:
        return next(iter(values.values()))
    return values
