"""The pre-flight: compose and validate the config for the fixed overrides, for each end of every searched range
(one param at a time) and for each warm-start configuration of the sweep file, so a bad value fails the sweep at
once instead of failing every trial."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import Any

from omegaconf.errors import ConfigAttributeError, ConfigKeyError
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from ._options import SweepSettingsError
from ._search_space import override_line
from .config import DEFAULT_VALIDATE

log = logging.getLogger(__name__)

# Top-level keys of dermsweep's training config that its pre-flight (dermsweep.training.config.validate) reads
DERMSWEEP_TOP_KEYS = ("data", "model", "augment", "schedule", "class_weight", "trainer", "objective", "tracking")


def _variants(
    space: dict[str, BaseDistribution], base: list[str], warm: Sequence[tuple[str, dict[str, Any]]]
) -> list[tuple[list[str], str]]:
    """(overrides, warm-start label or "") to check: the fixed ones, each end of each range, each warm start."""
    variants: list[tuple[list[str], str]] = [(base, "")]
    for key, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            values = list(dist.choices)
        else:
            assert isinstance(dist, FloatDistribution | IntDistribution)
            values = [dist.low, dist.high]
        variants += [(base + [f"{key}={v}"], "") for v in values]
    for label, entry in warm:
        variants.append((base + [f"{k}={v}" for k, v in entry.items()], label))
    return variants


def preflight(
    validate: str | None,
    config: Any,
    config_loader: Any,
    space: dict[str, BaseDistribution],
    fixed: dict[str, str],
    warm: Sequence[tuple[str, dict[str, Any]]] = (),
) -> None:
    """Run ``validate`` (a dotted function name) on every variant; raises the first problem."""
    if not validate:
        return
    default = validate == DEFAULT_VALIDATE
    lacking = [k for k in DERMSWEEP_TOP_KEYS if k not in config] if default else []
    if lacking:  # another app's config (e.g. hydra-optuna-sweeper's examples): the default check is not for it
        log.info("pre-flight %s skipped: not dermsweep's training config (no %s)", validate, ", ".join(lacking))
        return
    module, _, name = validate.rpartition(".")
    check = getattr(importlib.import_module(module), name)
    base = [override_line(k, v) for k, v in fixed.items()]
    for i, (overrides, label) in enumerate(_variants(space, base, warm)):
        cfg = config_loader.load_sweep_config(config, overrides)
        try:
            check(cfg)
        except (ConfigAttributeError, ConfigKeyError) as exc:
            if not (default and i == 0):
                raise
            log.info("pre-flight %s skipped: not dermsweep's training config (%s)", validate, exc)
            return
        except Exception as exc:  # one line naming the variant (Hydra prints a compact error without a traceback)
            where = f"hydra.sweeper.{label} ({' '.join(overrides[len(base) :])}): " if label else ""
            raise SweepSettingsError(f"{where}{exc}") from exc
