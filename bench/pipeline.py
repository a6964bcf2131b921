"""Input pipeline: images/second delivered by dermsweep's pipeline vs the classic ImageDataGenerator.

Both sides get the same images, the same `light` augmentation ranges (rotation 180, shifts 0.1, zoom 0.1, both
flips, nearest fill), the same output size (150x200) and batch size, and deliver float32 batches with labels.

  dermsweep:  decode + resize once (PIL, thread pool: data/pixels.py), then per epoch
              data.pipeline.training_dataset as TensorFlow training reads it (tf.data calling the NumPy batches:
              shuffle indices, gather, one OpenCV affine warp per image, prefetch); it delivers uint8 pixels, which
              the model casts itself, and ceil(n / batch) full batches per epoch (up to batch - 1 images more than
              n, not counted)
  classic:    tf_keras ImageDataGenerator(...).flow_from_dataframe: decodes, resizes and augments every image
              every epoch, one image at a time (what model.fit(workers=1) consumes)

Measured twice: on the shared 200x150 JPEGs and on 600x450 JPEGs (the shared images resized up once into a temp
folder: the size users download). Reported: steady-state epoch throughput (median of --epochs alternating epochs,
after one warm-up epoch each) and first-epoch throughput (dermsweep: decode + first epoch incl. graph tracing).

    python bench/pipeline.py [--images 600] [--epochs 3] [--sizes 200x150,600x450]
"""

from __future__ import annotations

import atexit
import importlib
import importlib.util
import math
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common as C

TF_KERAS_SPEC = "tf-keras>=2.21,<2.22"
LIGHT = {
    "rotation": 180,
    "width_shift": 0.1,
    "height_shift": 0.1,
    "zoom": 0.1,
    "horizontal_flip": True,
    "vertical_flip": True,
    "brightness": 0.0,
    "contrast": 0.0,
    "fill_mode": "nearest",
    "name": "light",
}


def ensure_tf_keras() -> str:
    """Import tf_keras, installing it without dependencies when missing (with deps it would pull `tensorflow`)."""
    try:
        mod = importlib.import_module("tf_keras")
        return f"tf_keras {mod.__version__} already installed"
    except ImportError:
        pass
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", TF_KERAS_SPEC]
    print(f"tf_keras missing (needed only for ImageDataGenerator): running {' '.join(cmd)}", flush=True)
    subprocess.run(cmd, check=True)
    importlib.invalidate_caches()
    mod = importlib.import_module("tf_keras")
    return f"installed tf_keras {mod.__version__} with pip --no-deps"


def upscale(table, size: tuple[int, int], folder: Path) -> list[str]:
    """Resize the chosen images up to size=(w, h) once into folder (kept between runs)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)

    def one(row) -> str:
        dst = folder / f"{row.image_id}.jpg"
        if not dst.is_file():
            with Image.open(row.path) as img:
                tmp = dst.with_suffix(".tmp.jpg")
                img.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(tmp, quality=90)
                tmp.replace(dst)
        return str(dst)

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, table.itertuples()))


def bench_size(label, table, paths, args, tf_keras) -> dict:
    import numpy as np
    from omegaconf import OmegaConf

    from dermsweep import cache as process_cache
    from dermsweep.data import pixels
    from dermsweep.data.catalog import Catalog, digest
    from dermsweep.data.images import load_rgb
    from dermsweep.data.pipeline import training_dataset

    h, w = 150, 200
    t = table.assign(path=paths)
    names = sorted(set(t["label"]))
    catalog = Catalog(
        "folder",
        names,
        t,
        lambda row, hh, ww: load_rgb(row["path"], hh, ww),
        digest("bench", label, list(t["image_id"])),
        [],
    )
    y = catalog.labels(t)
    n = len(t)
    aug = OmegaConf.create(LIGHT)

    # dermsweep: decode once (no disk cache: the first-run cost), then epochs over the in-memory pixels
    process_cache.clear()
    with C.Timer() as dec:
        decoded = pixels.decode(catalog, t, h, w, cache_dir=None)
    steps = math.ceil(n / args.batch)
    batches = iter(training_dataset(decoded.pixels, y, len(names), args.batch, aug, 0, steps).from_epoch(0))

    def project_epoch() -> float:
        s = time.perf_counter()
        count = 0
        for _ in range(steps):
            xb, _ = next(batches)
            count += int(xb.shape[0])
        assert count >= n
        return time.perf_counter() - s

    if tf_keras is None:
        first_project = project_epoch()
        steady = [project_epoch() for _ in range(args.epochs)]
        return {
            "source_size": label,
            "images": n,
            "dermsweep": {"decode_s": dec.s, "first_epoch_s": first_project, "steady_epoch_s": steady},
            "imagedatagenerator": None,
        }

    idg = tf_keras.preprocessing.image.ImageDataGenerator(
        rotation_range=180,
        width_shift_range=0.1,
        height_shift_range=0.1,
        zoom_range=0.1,
        horizontal_flip=True,
        vertical_flip=True,
        fill_mode="nearest",
    )
    gen = idg.flow_from_dataframe(
        t[["path", "label"]],
        x_col="path",
        y_col="label",
        target_size=(h, w),
        batch_size=args.batch,
        class_mode="categorical",
        shuffle=True,
        seed=0,
        validate_filenames=False,
    )

    def classic_epoch() -> float:
        s = time.perf_counter()
        count = 0
        for _ in range(len(gen)):
            xb, _ = next(gen)
            count += len(xb)
        assert count == n, count
        return time.perf_counter() - s

    first_project = project_epoch()  # warm-up: includes tracing the map function
    first_classic = classic_epoch()  # warm-up
    steady_p, steady_c, loads = [], [], []
    for _ in range(args.epochs):  # alternate so both sides see the same machine load
        steady_p.append(project_epoch())
        steady_c.append(classic_epoch())
        loads.append(C.load()["loadavg_1m"])
    sp, sc = C.median(steady_p), C.median(steady_c)
    first_incl = dec.s + first_project
    return {
        "source_size": label,
        "images": n,
        "output_size": f"{w}x{h}",
        "batch": args.batch,
        "dermsweep": {
            "decode_s": dec.s,
            "first_epoch_s": first_project,
            "first_epoch_incl_decode_s": first_incl,
            "steady_epoch_s": steady_p,
            "steady_img_per_s": n / sp,
            "first_epoch_incl_decode_img_per_s": n / first_incl,
        },
        "imagedatagenerator": {
            "first_epoch_s": first_classic,
            "steady_epoch_s": steady_c,
            "steady_img_per_s": n / sc,
            "first_epoch_img_per_s": n / first_classic,
        },
        "ratio_steady": sc / sp,
        "ratio_first_epoch": first_classic / first_incl,
        # over a whole run of E epochs: dermsweep pays decoding once
        "ratio_10_epochs": (first_classic + 9 * sc) / (first_incl + 9 * sp),
        "loadavg_1m_during": loads,
        "pixel_check": float(np.mean(decoded.pixels)),
    }


def main(argv=None) -> dict:
    p = C.parser(__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=600, help="images per epoch (stratified HAM10000 subset)")
    p.add_argument("--epochs", type=int, default=3, help="timed steady-state epochs per side (after 1 warm-up)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--sizes", default="200x150,600x450", help="source JPEG sizes WxH; 200x150 = the shared files")
    p.add_argument(
        "--tmp",
        default=str(Path(tempfile.gettempdir()) / "dermsweep-bench-images"),
        help="where upscaled copies are written once",
    )
    args = p.parse_args(argv)
    if C.shrink(args, "pipeline", images=64, epochs=1, sizes="200x150,240x180"):
        args.tmp = tempfile.mkdtemp(prefix="dermsweep-bench-tiny-upscaled-")
        atexit.register(shutil.rmtree, args.tmp, ignore_errors=True)
    tf_keras = None
    if args.tiny and importlib.util.find_spec("tf_keras") is None:  # a smoke run installs nothing
        install_note = "tf_keras not installed: --tiny measures dermsweep's side only"
    else:
        install_note = ensure_tf_keras()
        import tf_keras
    print(install_note)

    start_load = C.load()
    catalog, table = C.ham10000_table(args.data, args.images)
    results = []
    for size in args.sizes.split(","):
        w, h = (int(v) for v in size.lower().split("x"))
        if (w, h) == (200, 150):
            paths = list(table["path"])
        else:
            with C.Timer() as up:
                paths = upscale(table, (w, h), Path(args.tmp) / f"{w}x{h}")
            print(f"{size}: {len(paths)} upscaled JPEGs ready in {args.tmp} ({up.s:.1f}s)", flush=True)
        print(f"measuring {size} ({len(paths)} images, {args.epochs} epochs each side)...", flush=True)
        results.append(bench_size(size, table, paths, args, tf_keras))

    rows = []
    for r in results if tf_keras is not None else []:
        d, c = r["dermsweep"], r["imagedatagenerator"]
        rows.append(
            [
                r["source_size"],
                f"{d['steady_img_per_s']:.0f}",
                f"{c['steady_img_per_s']:.0f}",
                f"{r['ratio_steady']:.1f}x",
                f"{d['first_epoch_incl_decode_img_per_s']:.0f}",
                f"{c['first_epoch_img_per_s']:.0f}",
                f"{r['ratio_first_epoch']:.1f}x",
                f"{r['ratio_10_epochs']:.1f}x",
                f"{d['decode_s']:.1f}",
            ]
        )
    print()
    print(
        C.table(
            rows,
            [
                "source JPEG",
                "dermsweep img/s (steady)",
                "IDG img/s (steady)",
                "ratio",
                "dermsweep img/s (1st epoch+decode)",
                "IDG img/s (1st)",
                "ratio 1st",
                "ratio 10 epochs",
                "decode s",
            ],
        )
    )
    targets = []
    big = next((r for r in results if r["source_size"] == "600x450" and r["imagedatagenerator"]), None)
    if big:
        targets.append(
            C.target(
                "pipeline: steady-state speed-up vs ImageDataGenerator on 600x450 JPEGs",
                ">= 5x",
                big["ratio_steady"],
                big["ratio_steady"] >= 5,
                "x",
            )
        )
    end_load = C.load()
    print(f"\nload: start {start_load}, end {end_load}")
    C.print_targets(targets)
    out = {
        "settings": vars(args),
        "tf_keras": install_note,
        "load_start": start_load,
        "load_end": end_load,
        "results": results,
        "targets": targets,
        "notes": [
            "IDG uses its default nearest-neighbour resize when loading (the classic recipe); dermsweep "
            "resizes with PIL bilinear+antialias once. IDG runs serially, as model.fit(workers=1) feeds it.",
            "OS file cache is warm for both sides (the files were read before timing).",
        ],
    }
    C.save("pipeline", out, args.out)
    return out


if __name__ == "__main__":
    main()
