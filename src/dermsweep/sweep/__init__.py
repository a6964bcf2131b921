"""Sweeps: the link between a training job and its Optuna trial, Optuna storages, and MLflow parent runs.

The Hydra sweeper plugin (src/hydra_plugins/dermsweep_optuna_sweeper) imports this package and nothing else of
dermsweep; the training task reports each epoch through `trial_link`.
"""
