"""Accelerators on any Keras backend, from the `hardware` config: the backend's devices (devices.py), mixed precision
through Keras' dtype policies, data parallelism over several devices (tf.distribute.MirroredStrategy on TensorFlow,
keras.distribution.DataParallel on JAX; PyTorch trains on one device), the input pipeline's worker threads, and
JAX's compilation cache.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras

from ..errors import ConfigError
from ..keras_backend import select
from .devices import Devices, probe

log = logging.getLogger("dermsweep")
PARALLEL_BACKENDS = ("tensorflow", "jax")
MAX_AUTO_WORKERS = 8


@dataclass
class Hardware:
    backend: str
    devices: Devices
    policy: str  # Keras dtype policy: float32 | mixed_float16 | mixed_bfloat16
    replicas: int
    scope: Callable[[], contextlib.AbstractContextManager]
    data_workers: int

    @property
    def gpus(self) -> int:
        """Accelerators (GPUs or TPU cores) the backend sees; 0 on the CPU."""
        return 0 if self.devices.kind == "cpu" else self.devices.count

    @property
    def mixed_precision(self) -> bool:
        return self.policy != "float32"

    def describe(self) -> dict[str, str]:
        return {
            "hardware.backend": self.backend,
            "hardware.platform": platform.platform(),
            "hardware.cpu_count": str(os.cpu_count()),
            "hardware.accelerator": self.devices.kind,
            "hardware.gpus": str(self.gpus),
            "hardware.gpu_names": ", ".join(self.devices.names) if self.gpus else "none",
            "hardware.mixed_precision": str(self.mixed_precision).lower(),
            "hardware.dtype_policy": self.policy,
            "hardware.replicas": str(self.replicas),
            "hardware.data_workers": str(self.data_workers),
            **{f"hardware.{name}": version for name, version in self.devices.versions.items()},
            "hardware.keras": keras.__version__,
        }


def _choose(setting, default: bool) -> bool:
    return default if str(setting).lower() == "auto" else str(setting).lower() == "true"


def configure(hw_cfg, cache_dir: str | None = None) -> Hardware:
    backend = str(hw_cfg.backend)
    select(backend)  # keras is loaded by now: this checks it runs the configured backend
    devices = probe(backend)
    # Set every run, like the distribution below: both are process-global and a sweep runs many trials in one process.
    keras.mixed_precision.set_global_policy(_policy(hw_cfg, devices))
    replicas, scope = _parallel(backend, hw_cfg.multi_gpu, devices)
    if backend == "jax":
        _jax_compilation_cache(cache_dir)
    return Hardware(backend, devices, keras.mixed_precision.global_policy().name, replicas, scope, _workers(hw_cfg))


def _policy(hw_cfg, devices: Devices) -> str:
    """float32, or mixed precision (float16/bfloat16 compute, float32 weights): on by default with an accelerator
    (on a CPU it is slower). bfloat16 where the accelerator runs it natively: float32's range, so no loss scaling;
    float16 elsewhere (Keras then scales the loss)."""
    if not _choose(hw_cfg.mixed_precision, devices.kind != "cpu"):
        return "float32"
    dtype = str(hw_cfg.mixed_dtype)
    if dtype == "auto":
        dtype = "float16" if devices.kind == "gpu" and not devices.bfloat16 else "bfloat16"
    return f"mixed_{dtype}"


def _parallel(backend: str, setting, devices: Devices) -> tuple[int, Callable[[], contextlib.AbstractContextManager]]:
    """(replicas, scope to build and compile the model in): data parallelism over every device the backend sees."""
    several = devices.count > 1
    explicit = str(setting).lower() == "true"
    wanted = several and _choose(setting, backend in PARALLEL_BACKENDS)
    if wanted and backend not in PARALLEL_BACKENDS:
        raise ConfigError(
            f"hardware.multi_gpu={setting}: data parallelism runs on {' and '.join(PARALLEL_BACKENDS)}; with "
            f"{backend} dermsweep trains on one device. Set hardware.multi_gpu=auto or false, or hardware.backend=jax"
        )
    if backend == "jax":
        from keras import distribution

        # Variables are replicated and each batch is split across the devices, from the model's build on.
        distribution.set_distribution(
            distribution.DataParallel(devices=distribution.list_devices()) if wanted else None
        )
        return (devices.count if wanted else 1), contextlib.nullcontext
    if not wanted:
        if several and not explicit:
            log.info("%d devices seen; %s trains on one (hardware.multi_gpu)", devices.count, backend)
        return 1, contextlib.nullcontext
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy()
    return strategy.num_replicas_in_sync, strategy.scope


def _workers(hw_cfg) -> int:
    """Threads preparing training batches (data.pipeline): auto = one per CPU core, at most MAX_AUTO_WORKERS."""
    setting = hw_cfg.data_workers
    if str(setting).lower() == "auto":
        return max(1, min(MAX_AUTO_WORKERS, os.cpu_count() or 1))
    return int(setting)


def _jax_compilation_cache(cache_dir: str | None) -> None:
    """Keep XLA's compiled programs on disk under cache_dir/jax. Every compile() of a Keras model traces and
    compiles new train and predict functions, and most of a short trial's time on JAX is compiling (~20 s per
    phase for a MobileNet on 2 CPU cores); a sweep's later trials and phases, and later runs, mostly find theirs
    here. Also the many small programs that initialise the weights (~15 s of a first build)."""
    if not cache_dir:
        return
    import jax

    jax.config.update("jax_compilation_cache_dir", str(Path(cache_dir).expanduser() / "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
