"""dermsweep's Hydra Sweeper on Optuna 5: ``hydra/sweeper=optuna``. See docs/sweeps.md."""
