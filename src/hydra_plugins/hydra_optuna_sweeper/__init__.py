"""dermsweep-alias-of-hydra-optuna-sweeper: not facebookresearch's plugin.

Configs written for hydra-optuna-sweeper name its class by ``_target_`` (lightning-hydra-template's ``hparams_search``
files do); this package keeps that path working on dermsweep's sweeper. It registers no config of its own:
``hydra/sweeper: optuna`` and ``hydra/sweeper/sampler`` come from ``hydra_plugins.dermsweep_optuna_sweeper``.
"""
