"""Accelerators: mixed precision and multi-GPU data parallelism, both switchable from `hardware` config."""

from __future__ import annotations

import contextlib
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass

import keras
import tensorflow as tf


@dataclass
class Hardware:
    gpus: int
    mixed_precision: bool
    replicas: int
    scope: Callable[[], contextlib.AbstractContextManager]

    def describe(self) -> dict[str, str]:
        return {
            "hardware.platform": platform.platform(),
            "hardware.cpu_count": str(os.cpu_count()),
            "hardware.gpus": str(self.gpus),
            "hardware.gpu_names": ", ".join(
                tf.config.experimental.get_device_details(g).get("device_name", g.name)
                for g in tf.config.list_physical_devices("GPU")
            )
            or "none",
            "hardware.mixed_precision": str(self.mixed_precision).lower(),
            "hardware.replicas": str(self.replicas),
            "hardware.tensorflow": tf.__version__,
            "hardware.keras": keras.__version__,
        }


def _choose(setting, default: bool) -> bool:
    return default if str(setting).lower() == "auto" else bool(setting)


def configure(hw_cfg) -> Hardware:
    gpus = len(tf.config.list_physical_devices("GPU"))
    mixed = _choose(hw_cfg.mixed_precision, gpus > 0)  # float16 on CPU is slower, not faster
    # Set every run: the policy is process-global and a sweep runs many trials in one process.
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed else "float32")
    if _choose(hw_cfg.multi_gpu, gpus > 1) and gpus > 1:
        strategy = tf.distribute.MirroredStrategy()
        return Hardware(gpus, mixed, strategy.num_replicas_in_sync, strategy.scope)
    return Hardware(gpus, mixed, 1, contextlib.nullcontext)
