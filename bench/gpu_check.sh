#!/usr/bin/env bash
# GPU check: one real train.py run on the JAX (or PyTorch) backend in mixed precision, then a short pruned sweep,
# on a GPU machine that has Python 3.12 with CUDA builds of PyTorch and JAX but no TensorFlow, no Keras and no
# network. Prints epoch time, img/s, GPU memory, the validation figures, and whether the logged probabilities are
# float32. Written for a 15-minute device lease: the run step stays under 10 minutes (each stage has a timeout).
#
#   bench/gpu_check.sh pack   # HERE (CPU machine, PyPI reachable): wheels for cp312 + a HAM10000 subset + weights
#                             # into gpu_kit/ (git-ignored); prints its size (the device tool carries <= 64 MiB)
#   bench/gpu_check.sh run    # THERE: run tool, command "bench/gpu_check.sh run", carry ["gpu_kit"], timeout 590;
#                             # writes logs, the MLflow store and gpu_report.json under $OUT (or gpu_out/)
#
# Options (environment): BACKEND=jax|torch (default jax), IMAGES=3000 (subset size packed), TRAIN_S=330 and
# SWEEP_S=150 (stage timeouts, seconds), KIT=gpu_kit. docs/gpu.md has the runbook.
set -euo pipefail
cd "$(dirname "$0")/.."
KIT=${KIT:-gpu_kit}
BACKEND=${BACKEND:-jax}
IMAGES=${IMAGES:-3000}
TRAIN_S=${TRAIN_S:-330}
SWEEP_S=${SWEEP_S:-150}
SHARED=${SHARED:-../shared}
# What dermsweep imports at training time, minus TensorFlow (the device has JAX and PyTorch). pip resolves their
# dependencies; `pack` then drops what the device image already has (DEVICE_HAS) to fit the 64 MiB carry.
REQUIREMENTS=(
  "keras>=3.10" "hydra-core>=1.3.2,<1.4" "optuna>=4.5" "mlflow-skinny>=3.10" "sqlalchemy>=2.0" "alembic"
  "pandas>=2.2" "scikit-learn>=1.5" "pillow>=10" "opencv-python-headless>=4.9" "matplotlib>=3.8" "rich>=13"
)
DEVICE_HAS=${DEVICE_HAS:-"numpy jax jaxlib torch nvidia triton ml_dtypes sympy networkx jinja2 markupsafe filelock fsspec mpmath typing_extensions setuptools opt_einsum scipy"}

usage() { sed -n '2,12p' "$0"; }

pack() {
  rm -rf "$KIT" && mkdir -p "$KIT/wheels" "$KIT/weights"
  python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    -d "$KIT/wheels" "${REQUIREMENTS[@]}"
  # wheel names spell a distribution with underscores: nvidia_cublas_cu12-..., ml_dtypes-...
  for have in $DEVICE_HAS; do rm -f "$KIT/wheels/${have//-/_}"[-_]*.whl; done
  printf '%s\n' "${REQUIREMENTS[@]}" >"$KIT/requirements.txt"
  cp "$SHARED/weights/mobilenet_v1_0.75_224_no_top.weights.h5" "$SHARED/weights/mobilenet_v1_0.25_224_no_top.weights.h5" \
    "$KIT/weights/"
  # A stratified, lesion-grouped subset: the project's own subset function, the same rows every time.
  .venv/bin/python - "$SHARED/data/ham10000" "$KIT/ham10000" "$IMAGES" <<'PY'
import shutil, sys
from pathlib import Path
sys.path.insert(0, "bench")
import _common as C
src, dst, n = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
_, table = C.ham10000_table(str(src), n)
meta = (src / "HAM10000_metadata.csv").read_text().splitlines()
keep = set(table["image_id"])
rows = [meta[0]] + [line for line in meta[1:] if line.split(",")[1] in keep]
for path in table["path"]:
    out = dst / Path(path).parent.name / Path(path).name
    out.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(path, out)
(dst / "HAM10000_metadata.csv").write_text("\n".join(rows) + "\n")
print(f"{len(rows) - 1} images copied to {dst}")
PY
  du -sh "$KIT" "$KIT"/*
  local mib
  mib=$(du -sm "$KIT" | cut -f1)
  if [ "$mib" -gt 60 ]; then
    echo "gpu_kit is ${mib} MiB: over the 64 MiB carry with the working tree; drop wheels the device has" \
      "(set DEVICE_HAS) or lower IMAGES" >&2
    exit 1
  fi
}

run() {
  OUT=${OUT:-$PWD/gpu_out}
  mkdir -p "$OUT"
  local started=$SECONDS
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
  python3 --version
  python3 -m venv --system-site-packages "$OUT/venv"  # keeps the image's CUDA torch and jax
  local py="$OUT/venv/bin/python"
  "$py" -m pip install -q --no-index --find-links "$KIT/wheels" -r "$KIT/requirements.txt" 2>&1 | tail -5
  "$py" -c "import jax, torch, keras; print('jax', jax.__version__, jax.devices(), '| torch', torch.__version__, \
torch.cuda.is_available(), '| keras', keras.__version__)"
  echo "setup: $((SECONDS - started)) s"
  export PYTHONPATH=$PWD/src KERAS_BACKEND=$BACKEND DERMSWEEP_CACHE_DIR=$OUT/cache MLFLOW_TRACKING_URI="sqlite:///$OUT/mlflow.db"
  # GPU memory in use, every half second, beside the runs
  nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 >"$OUT/gpu_memory_mib.csv" &
  local sampler=$!
  trap 'kill $sampler 2>/dev/null || true' EXIT
  local common=(data=ham10000 "data.root=$PWD/$KIT/ham10000" "paths.weights_dir=$PWD/$KIT/weights"
    "hardware.backend=$BACKEND" hardware.mixed_precision=true resolution=150x200 experiment=gpu-check
    tracking.log_model=always)
  # 1. The shipped recipe (v1 a=0.75, whole backbone fine-tuned), mixed precision.
  timeout "$TRAIN_S" "$py" train.py "${common[@]}" model=mobilenet_v1_a075 trainer.frozen.epochs=2 \
    trainer.finetune.epochs=4 "run_name=gpu-$BACKEND-mixed" 2>&1 | tee "$OUT/train.log" | grep -E "epoch|finished|Error" || true
  echo "train: $((SECONDS - started)) s"
  # 2. A short pruned sweep on the small backbone: trials learn, successive halving stops the weak ones.
  timeout "$SWEEP_S" "$py" train.py -m "${common[@]}" hydra/sweeper=optuna model=mobilenet_v1_a025 \
    trainer.frozen.epochs=1 trainer.finetune.epochs=3 tracking.log_model=improving hydra.sweeper.n_trials=4 \
    "hydra.sweeper.storage=sqlite:///$OUT/optuna.db" hydra.sweeper.study_name=gpu-check hydra.sweeper.plots=false \
    "hydra.sweep.dir=$OUT/multirun" hydra.sweeper.pruner._target_=optuna.pruners.SuccessiveHalvingPruner \
    +hydra.sweeper.pruner.min_resource=1 "model.dropout=interval(0.1,0.5)" \
    "trainer.finetune.lr=tag(log,interval(1e-5,1e-3))" 2>&1 | tee "$OUT/sweep.log" | grep -E "finished|pruned|Error" || true
  echo "sweep: $((SECONDS - started)) s"
  kill $sampler 2>/dev/null || true
  "$py" - "$OUT" <<'PY'
"""Read the runs back from the MLflow store: what the check reports."""
import json, sys
from pathlib import Path

import numpy as np
from mlflow.tracking import MlflowClient

out = Path(sys.argv[1])
client = MlflowClient(f"sqlite:///{out}/mlflow.db")
exp = client.get_experiment_by_name("gpu-check")
runs = client.search_runs([exp.experiment_id]) if exp else []
memory = [int(v) for v in (out / "gpu_memory_mib.csv").read_text().split() if v.strip().isdigit()]
report = {"gpu": (out / "gpu.txt").read_text().strip(), "peak_gpu_memory_mib": max(memory, default=None), "runs": []}
for run in runs:
    p, m = run.data.params, run.data.metrics
    batch, steps = int(p.get("trainer.batch_size", 32)), int(p.get("trainer.steps_per_epoch_used", 0))
    epochs = [h.value for h in client.get_metric_history(run.info.run_id, "epoch/train_seconds")]
    row = {
        "run": run.data.tags.get("mlflow.runName"),
        "status": run.data.tags.get("dermsweep.status"),
        "backend": p.get("hardware.backend"),
        "dtype_policy": p.get("hardware.dtype_policy"),
        "accelerator": p.get("hardware.accelerator"),
        "gpu_names": p.get("hardware.gpu_names"),
        "epoch_seconds": epochs,
        # the first epoch of each phase includes compiling: the steady figure is the fastest epoch
        "img_per_s_steady": batch * steps / min(epochs) if epochs and steps else None,
        "val_seconds": [h.value for h in client.get_metric_history(run.info.run_id, "epoch/val_seconds")],
        "final_val": {k: v for k, v in m.items() if k.startswith("final_val/")},
    }
    # The logged model's probabilities: float32 whatever the compute dtype, rows summing to 1.
    try:
        import keras

        folder = Path(client.download_artifacts(run.info.run_id, "model", str(out / "models" / run.info.run_id)))
        model = keras.saving.load_model(next(folder.rglob("*.keras")), compile=False)
        x = np.random.default_rng(0).integers(0, 256, (4, *model.input_shape[1:])).astype("float32")
        probs = keras.ops.convert_to_numpy(model(x, training=False))
        row["probabilities_dtype"] = str(probs.dtype)
        row["probabilities_row_sum_max_error"] = float(np.max(np.abs(probs.sum(1) - 1)))
        row["probabilities_float32"] = probs.dtype == np.float32
    except Exception as exc:  # a run without a model (pruned, not improving) or a load problem: said, not fatal
        row["probabilities_float32"] = f"not checked: {type(exc).__name__}: {str(exc)[:200]}"
    report["runs"].append(row)
(out / "gpu_report.json").write_text(json.dumps(report, indent=2, default=str))
print(json.dumps(report, indent=2, default=str))
PY
  echo "total: $((SECONDS - started)) s"
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  *) usage; [ "${1:-}" = "--help" ] || [ "${1:-}" = "-h" ] ;;
esac
