"""Shared helpers for the bench/ scripts: paths, machine load, tables, JSON results, targets."""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_DATA = str(ROOT.parent / "shared" / "data" / "ham10000")
DEFAULT_WEIGHTS_DIR = str(ROOT.parent / "shared" / "weights")
DEFAULT_WEIGHTS = str(Path(DEFAULT_WEIGHTS_DIR) / "mobilenet_v1_0.25_224_no_top.weights.h5")
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# --tiny, or this variable set to 1 (what tests/test_bench.py and `run_all.py --tiny` use): every script runs for
# seconds on synthetic images with random weights, to prove it still works. Its figures mean nothing.
TINY_ENV = "DERMSWEEP_BENCH_TINY"
TINY_RESULTS = RESULTS / "tiny"


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--data", default=DEFAULT_DATA, help="HAM10000 root (Kaggle layout), default ../shared/data/ham10000"
    )
    p.add_argument("--out", default=None, help="JSON result file (default bench/results/<name>.json)")
    p.add_argument(
        "--tiny",
        action="store_true",
        default=os.environ.get(TINY_ENV, "0") not in ("", "0"),
        help=f"smoke run (also {TINY_ENV}=1): seconds, synthetic images, random weights; checks that the script "
        "works, its figures mean nothing; result in bench/results/tiny/",
    )
    return p


def shrink(args: argparse.Namespace, name: str, **sizes) -> bool:
    """In --tiny mode set `sizes` on args, point --data at synthetic HAM10000-layout images, --weights (if any) at
    random init, and the result at bench/results/tiny/<name>.json. Returns whether it is tiny."""
    if not args.tiny:
        return False
    for key, value in sizes.items():
        setattr(args, key, value)
    args.data = str(synthetic_ham10000())
    if hasattr(args, "weights"):
        args.weights = None
    args.out = args.out or str(TINY_RESULTS / f"{name}.json")
    print(f"--tiny: synthetic images in {args.data}, random weights, sizes {sizes}: figures mean nothing", flush=True)
    return True


def weights_override(weights: str | None) -> str:
    """A weights path (or None: random init) as a Hydra override value."""
    return str(Path(weights).resolve()) if weights else "null"


_SYNTHETIC: list[Path] = []


def synthetic_ham10000(per_class: int = 24, size: tuple[int, int] = (150, 200)) -> Path:
    """A throw-away folder in HAM10000's Kaggle layout (metadata CSV, two image folders of 200x150 JPEGs) holding
    the project's synthetic lesions (data/sources/synthetic.py: learnable, deterministic). Made once per process,
    removed at exit."""
    if _SYNTHETIC:
        return _SYNTHETIC[0]
    import atexit
    import shutil
    import tempfile

    from PIL import Image

    from dermsweep.data.sources.ham10000 import FULL_NAMES
    from dermsweep.data.sources.synthetic import render

    root = Path(tempfile.mkdtemp(prefix="dermsweep-bench-tiny-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    rows = ["lesion_id,image_id,dx,dx_type,age,sex,localization"]
    for c, dx in enumerate(sorted(FULL_NAMES)):
        for i in range(per_class):
            image_id = f"SYNTH_{c:02d}{i:05d}"  # never a real ISIC id: caches keyed by id cannot mix them up
            folder = root / f"HAM10000_images_part_{1 + i % 2}"
            folder.mkdir(exist_ok=True)
            Image.fromarray(render(image_id, c, *size)).save(folder / f"{image_id}.jpg", quality=90)
            rows.append(f"SYNTH_L{c:02d}{i // 2:05d},{image_id},{dx},histo,50.0,female,back")
    (root / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
    _SYNTHETIC.append(root)
    return root


def add_log_model_option(p: argparse.ArgumentParser) -> None:
    """--log-model for the benchmarks that run trials (dermsweep.training.config.LOG_MODEL_MODES)."""
    p.add_argument(
        "--log-model",
        default="improving",
        choices=["improving", "always", "never"],
        help="tracking.log_model (default: improving, the project's default)",
    )


def load() -> dict:
    one, five, fifteen = os.getloadavg()
    return {
        "loadavg_1m": round(one, 2),
        "loadavg_5m": round(five, 2),
        "loadavg_15m": round(fifteen, 2),
        "cpus": os.cpu_count(),
    }


def machine() -> dict:
    """Python, platform, cores, and the installed versions of the frameworks (read from package metadata: importing
    TensorFlow into a JAX benchmark would change what it measures)."""
    from importlib.metadata import PackageNotFoundError, version

    info = {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}
    for dist in ("tensorflow-cpu", "tensorflow", "keras", "jax", "jaxlib", "torch"):
        try:
            info[dist] = version(dist)
        except PackageNotFoundError:
            pass
    if "keras" in sys.modules:
        info["keras_backend"] = sys.modules["keras"].backend.backend()
    return info


def median(xs):
    return statistics.median(xs) if xs else float("nan")


class Timer:
    def __enter__(self):
        self.t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.s = time.perf_counter() - self.t


def target(name: str, goal: str, measured: float, met: bool, unit: str = "") -> dict:
    return {"name": name, "target": goal, "measured": measured, "unit": unit, "met": bool(met)}


def table(rows: list[list], headers: list[str]) -> str:
    cells = [[str(h) for h in headers]] + [[c if isinstance(c, str) else _fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.3g}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def save(name: str, result: dict, out: str | None = None) -> Path:
    path = Path(out) if out else RESULTS / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": name,
        "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine(),
        **result,
    }
    path.write_text(json.dumps(result, indent=2, default=float))
    print(f"\nwrote {path}")
    return path


def print_targets(targets: list[dict]) -> None:
    rows = [
        [t["name"], t["target"], f"{t['measured']:.3g}{t['unit']}", "MET" if t["met"] else "NOT MET"] for t in targets
    ]
    print(table(rows, ["target", "goal", "measured", "status"]))


def ham10000_table(root: str, n: int, seed: int = 0):
    """The first n images of a stratified, lesion-grouped subset (the project's own subset function)."""
    from omegaconf import OmegaConf

    from dermsweep.data.sources import ham10000
    from dermsweep.data.split import subset

    cfg = OmegaConf.create({"root": root, "metadata": "HAM10000_metadata.csv", "image_glob": "*/*.jpg"})
    catalog = ham10000.load(cfg)
    table = subset(catalog.table, n, seed).reset_index(drop=True)
    return catalog, table


def recipe(name: str, weights_dir: str | None, height: int, width: int):
    """conf/model/<name>.yaml composed as a run composes it, at height x width; weights_dir None = random init."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import MissingConfigException

    overrides = [f"model={name}", f"model.height={height}", f"model.width={width}"]
    overrides.append(f"paths.weights_dir={Path(weights_dir).resolve()}" if weights_dir else "model.weights=null")
    try:
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides).model
    except MissingConfigException as exc:
        choices = sorted(p.stem for p in (ROOT / "conf" / "model").glob("*.yaml"))
        raise SystemExit(f"--model {name}: no such recipe in conf/model (choose from {', '.join(choices)})") from exc
    if cfg.weights and not Path(str(cfg.weights)).is_file():
        raise SystemExit(f"--model {name}: weights file {cfg.weights} not found (set --weights-dir)")
    return cfg


def in_memory(x, y, batch: int, steps: int):
    """Full float32 batches sliced from arrays in memory, endlessly: what feeding costs nothing."""
    import keras
    import numpy as np

    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).cache().repeat().prefetch(tf.data.AUTOTUNE)

    class InMemory(keras.utils.PyDataset):
        def __len__(self):
            return steps

        def __getitem__(self, i):
            idx = np.arange(i * batch, (i + 1) * batch) % len(x)  # every batch full: one compiled step on JAX
            return x[idx], y[idx]

    return InMemory()
