"""What each Keras backend sees of the machine: its accelerators, whether they compute in bfloat16, and the versions
that a run records. One probe per backend; each imports only its own framework (a JAX run never loads TensorFlow)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Devices:
    kind: str  # gpu | tpu | cpu: where the backend puts the model
    names: tuple[str, ...] = ("cpu",)  # one per device the model can be replicated on
    bfloat16: bool = False  # the accelerators run bfloat16 natively (TPU, NVIDIA compute capability 8.0+)
    versions: dict[str, str] = field(default_factory=dict)  # framework -> version

    @property
    def count(self) -> int:
        return len(self.names)


def _tensorflow() -> Devices:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    details = [tf.config.experimental.get_device_details(g) for g in gpus]
    names = tuple(str(d.get("device_name", g.name)) for d, g in zip(details, gpus, strict=True))
    bf16 = bool(gpus) and all(tuple(d.get("compute_capability") or (0, 0)) >= (8, 0) for d in details)
    return Devices("gpu" if gpus else "cpu", names or ("cpu",), bf16, {"tensorflow": tf.__version__})


def _jax() -> Devices:
    import jax
    import jaxlib

    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # not "Unable to initialize backend 'tpu'"
    devices = jax.devices()  # the default platform's: accelerators when there are any
    platform = devices[0].platform
    versions = {"jax": jax.__version__, "jaxlib": jaxlib.__version__}
    if platform == "cpu":  # one device, or several with XLA_FLAGS=--xla_force_host_platform_device_count=N
        return Devices("cpu", tuple("cpu" for _ in devices), versions=versions)
    kind = "tpu" if platform == "tpu" else "gpu"
    capability = str(getattr(devices[0], "compute_capability", "0") or "0")
    bf16 = kind == "tpu" or float(capability) >= 8.0
    return Devices(kind, tuple(str(d.device_kind) for d in devices), bf16, versions)


def _torch() -> Devices:
    import torch

    versions = {"torch": str(torch.__version__)}
    n = torch.cuda.device_count()
    if n == 0:
        return Devices("cpu", versions=versions)
    names = tuple(torch.cuda.get_device_name(i) for i in range(n))
    return Devices("gpu", names, bool(torch.cuda.is_bf16_supported()), versions)


PROBES: dict[str, Callable[[], Devices]] = {"tensorflow": _tensorflow, "jax": _jax, "torch": _torch}


def probe(backend: str) -> Devices:
    return PROBES[backend]()
