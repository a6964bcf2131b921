"""Knowledge distillation: a run (the student) learns from a trained model's predictions (the teacher) as well as
from the labels, so one small model can keep what an ensemble or a cross-validation's bag found.

    python train.py model=mobilenet_v2_a035 distill.teacher=models:/skin-lesion-classifier@champion

The student's training target for image i is (1 - w) * onehot(label_i) + w * softmax(teacher_logits_i / T): the
soft-label form of distillation (Hinton et al. 2015 with the student at temperature 1). T > 1 spreads the teacher's
probability over the classes it finds similar (the "dark knowledge"); w is the share of the loss that follows the
teacher. Which teacher logits (`distill.teacher_output`):
    shipped  (default) the log of the probabilities it ships: its members and test-time views averaged, then its
             calibration and prior adjustment, so the student learns the teacher's decisions, rare classes already
             pushed up (computed from the cached raw logits with the teacher's final layer: no second pass);
    raw      what its shipped graph feeds its final softmax, before its calibration and prior adjustment (the
             student then chooses its own on validation; on HAM10000 its plain classifier scored 7.5 points lower on
             validation than a shipped-taught student's, docs/quality.md);
    out_of_fold  a cross-validation's bag (or an ensemble of CVs) as teacher: for each training image, the
             probabilities of the fold models that never trained on it, as the run logged them (through gains
             chosen on the other folds; CVs logged before cross-fitting: the bag's own gains). A bag has trained on
             every train + validation image, so its own predictions there are memorised labels; these are its
             honest ones, and cost no forward pass. The student must train on images the CV held out in some fold
             (the same data and split seed: the test part is the one both hold out).

Class weighting stays tied to the true label: each image weighs its class's weight (Keras' class_weight would read
the class from the argmax of the soft target, which can be the teacher's mistake).

The teacher's logits are the expensive part (a forward pass of an ensemble over ~8,000 images), so they are
computed once for the run's training and validation images and cached under `cache_dir/teacher-logits/`, keyed by
the teacher's weights file (its SHA-256: a moved alias or a retrained model is another teacher) and the images:
every fold of a cross-validation and every trial of a sweep on the same data reuse one entry. Only the training
images' logits are used; the test split is never shown to the teacher.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import Prepared, prepare
from ..data.catalog import digest
from ..data.pipeline import eval_dataset
from ..errors import ConfigError
from ..tracking import run_format as rf
from ..tracking.model_ref import ModelRef, load_resolved, resolve
from .batch_predict import predict

log = logging.getLogger("dermsweep")

CACHE_FOLDER = "teacher-logits"
OUT_OF_FOLD = "out_of_fold"  # distill.teacher_output: a CV bag's out-of-fold predictions
TEACHER_LOGITS_LAYER = "probabilities"  # the shipped model's final layer: its input is the averaged logits


@dataclass
class Teaching:
    """What the student trains on: soft targets and per-image loss weights, and where they came from."""

    targets: np.ndarray  # (n_train, classes) float32, rows sum to 1
    weights: np.ndarray | None  # (n_train,) float32 class weight of each image's true label; None: all 1
    teacher: ModelRef
    key: str  # the teacher cache's key
    from_cache: bool
    train_agreement: float  # share of training images where the teacher's argmax is the label
    validation_seen: int | None = None  # the run's validation images the teacher trained on; None: not known
    validation_images: int = 0

    def saw_validation(self) -> str | None:
        return saw_validation(self.validation_seen, self.validation_images)

    def describe(self) -> str:
        return self.teacher.describe()

    def summary(self, cfg) -> str:
        """For the run's description: distilled from whom, and how."""
        d = cfg.distill
        return (
            f"distilled from {self.describe()} ({d.teacher_output} output, temperature {float(d.temperature):g}, "
            f"weight {float(d.weight):g})"
        )

    def params(self) -> dict[str, str]:
        return {
            "distill.teacher_run_id": str(self.teacher.run_id or ""),
            "distill.teacher_version": str(self.teacher.version or ""),
            "distill.teacher_key": self.key,
        }

    def tags(self) -> dict[str, str]:
        saw = self.saw_validation()
        return {rf.TEACHER: self.describe(), **({rf.TEACHER_SAW_VALIDATION: saw} if saw else {})}

    def to_meta(self, cfg) -> dict:
        """The student model's metadata (model card, predict): which teacher, at what temperature and weight."""
        return {
            "teacher": {
                "uri": str(cfg.distill.teacher),
                "description": self.describe(),
                "run_id": self.teacher.run_id,
                "output": str(cfg.distill.teacher_output),
                "temperature": float(cfg.distill.temperature),
                "weight": float(cfg.distill.weight),
                "validation_seen": self.validation_seen,  # of the run's validation images, trained on by the teacher
                "validation_images": self.validation_images,
            }
        }


def saw_validation(seen: int | None, images: int) -> str | None:
    """The tag's 'N of M' where a teacher trained on N of a run's M validation images; None where none or not known."""
    return f"{seen} of {images}" if seen else None


def saw_validation_of_folds(metas: list[dict]) -> str | None:
    """A distilled cross-validation's 'N of M' from its folds' Teaching.to_meta: its out-of-fold objective is every
    fold's validation images together. None where no fold's teacher saw any, or one fold's is not known."""
    seen = [m["teacher"].get("validation_seen") for m in metas]
    if None in seen:
        return None
    return saw_validation(sum(seen), sum(int(m["teacher"].get("validation_images", 0)) for m in metas))


def requested(cfg) -> bool:
    distill = cfg.get("distill")
    return distill is not None and distill.get("teacher") not in (None, "")


def teach(cfg, data: Prepared, class_weight: dict[int, float] | None, client, batch_size: int) -> Teaching:
    """The soft targets for `data`'s training images from the teacher `cfg.distill.teacher` (cached, see the module).
    Raises ModelNotFound for a missing teacher, ConfigError when its classes differ from the data's."""
    teacher = resolve(str(cfg.distill.teacher), client)
    if "class_names" in teacher.meta:  # checked here too: a cache hit with raw logits never loads the teacher
        _check_classes(teacher, data)
    if str(cfg.distill.teacher_output) == OUT_OF_FOLD:
        train_logits, key = _out_of_fold(teacher, data, client)
        from_cache, ids = False, list(data.split.train["image_id"])
        source = "out of fold (logged by its CV)"
    else:
        key = _key(teacher, data)
        path = Path(str(cfg.get("cache_dir") or ".cache/dermsweep")) / CACHE_FOLDER / f"{key}.npz"
        ids = _ids(data)
        logits = _read(path, ids)
        from_cache = logits is not None
        model = None  # the teacher is loaded only when its logits are computed or its final layer is needed, once
        if logits is None:
            model = _load_checked(teacher, data)
            logits = _teacher_logits(cfg, data, teacher, model, batch_size)
            _write(path, ids, logits)
        train_logits = logits[: len(data.y["train"])]
        if str(cfg.distill.teacher_output) == "shipped":
            train_logits = _shipped(model or _load_checked(teacher, data), train_logits)
        source = "read from its cache" if from_cache else "computed"
    targets = soft_targets(data.y["train"], train_logits, float(cfg.distill.temperature), float(cfg.distill.weight))
    weights = None
    if class_weight is not None:
        weights = np.array([class_weight[int(c)] for c in data.y["train"]], dtype=np.float32)
    agreement = float((train_logits.argmax(axis=1) == data.y["train"]).mean())
    log.info(  # two lines: a run id alone is 32 columns of a 100-column terminal
        "teacher %s: %d images' logits %s\n  (key %s); it agrees with %.1f%% of the training labels",
        teacher.describe(),
        len(ids),
        source,
        key,
        100 * agreement,
    )
    taught = Teaching(targets, weights, teacher, key, from_cache, agreement)
    taught.validation_seen, taught.validation_images = _validation_seen(teacher, data, client), len(data.y["val"])
    if taught.validation_seen:
        log.warning(
            "the teacher trained on %d of this run's %d validation images (a cross-validation's bag trains on\n"
            "  every image it predicts out of fold): its validation figures, and the choices made on them, lean\n"
            "  optimistic against runs taught otherwise (the gate says so); its test figures are clean",
            taught.validation_seen,
            taught.validation_images,
        )
    return taught


def _validation_seen(teacher: ModelRef, data: Prepared, client) -> int | None:
    """How many of `data`'s validation images the teacher trained on: each one a cross-validation's bag (or an
    ensemble of them) predicted out of fold, as it trained on it in the other folds; none for a run on this same
    split (it trained on the same training images); None where its run does not say (a model file, another split,
    a store that cannot be read)."""
    from ..tracking.store import connect

    if teacher.run_id is None:
        return None
    try:
        client = client or connect(create=False)
        found = _cv_rows(teacher, data, client)
        if found is None:
            same_split = client.get_run(teacher.run_id).data.tags.get(rf.SPLIT_ID) == data.split.split_id
            return 0 if same_split else None
    except Exception as exc:  # only a warning's worth: the run trains the same either way
        log.debug("could not tell which images the teacher trained on: %s", exc)
        return None
    trained_on = {str(i) for i in found[1]}
    return sum(str(i) in trained_on for i in data.split.val["image_id"])


def _out_of_fold(teacher: ModelRef, data: Prepared, client) -> tuple[np.ndarray, str]:
    """The log of the CV bag's out-of-fold shipped probabilities for `data`'s training images, and their key."""
    from ..tracking.store import connect

    def not_a_cv(why: str) -> ConfigError:
        return ConfigError(
            f"distill.teacher_output={OUT_OF_FOLD} needs a cross-validation's run as the teacher (runs:/<its run "
            f"id>/model or a registered version of one); {teacher.describe()} {why}"
        )

    if teacher.run_id is None:
        raise not_a_cv("names no run")
    found = _cv_rows(teacher, data, client or connect(create=False))
    if found is None:
        raise not_a_cv("is not one (nor an ensemble of them)")
    probs, oof_ids = found
    row = {str(image_id): i for i, image_id in enumerate(oof_ids)}
    train_ids = [str(i) for i in data.split.train["image_id"]]
    missing = [i for i in train_ids if i not in row]
    if missing:
        raise ConfigError(
            f"the teacher {teacher.describe()} has out-of-fold predictions for {len(row)} images but not for "
            f"{len(missing)} of this run's {len(train_ids)} training images (e.g. {', '.join(missing[:3])}): they "
            "are in its held-out test part; train on the split it was cross-validated on (the same data.split.seed "
            "and test_fraction)"
        )
    chosen = probs[[row[i] for i in train_ids]]
    return np.log(np.clip(chosen, 1e-12, 1.0)).astype(np.float32), digest(OUT_OF_FOLD, teacher.run_id, data.dataset_id)


def _cv_rows(teacher: ModelRef, data: Prepared, client) -> tuple[np.ndarray, np.ndarray] | None:
    """A cross-validation teacher's (or an ensemble of them) out-of-fold probabilities and their image ids, as its run
    logged them; None when the teacher is no cross-validation. ConfigError for one on other data or unreadable."""
    from ..tracking.store import first_line
    from .ship_record import read_view_logits

    run = client.get_run(teacher.run_id)
    members = run.data.tags.get(rf.MEMBERS)
    # an ensemble of cross-validations (dermsweep ensemble) logged its out-of-fold rows too; a fold alone has one
    # fold's predictions
    first = client.get_run(members.split(",")[0]).data.tags if members else run.data.tags
    if not rf.is_cross_validation(first):
        return None
    if run.data.tags.get(rf.DATASET_ID) != data.dataset_id:
        raise ConfigError(
            f"the teacher {teacher.describe()} was cross-validated on dataset {run.data.tags.get(rf.DATASET_ID)}, "
            f"this run's is {data.dataset_id}: its out-of-fold predictions are for other images"
        )
    try:
        logged = read_view_logits(client.download_artifacts(teacher.run_id, rf.VIEW_LOGITS))
    except Exception as exc:
        raise ConfigError(
            f"the teacher {teacher.describe()} has no readable {rf.VIEW_LOGITS} ({first_line(exc)})"
        ) from exc
    probs, oof_ids = logged.probabilities.get("val"), logged.image_ids.get("val")
    if probs is None or oof_ids is None:
        raise ConfigError(f"the teacher {teacher.describe()} logged no out-of-fold probabilities with image ids")
    return probs, oof_ids


def soft_targets(labels: np.ndarray, teacher_logits: np.ndarray, temperature: float, weight: float) -> np.ndarray:
    """(1 - weight) * onehot(labels) + weight * softmax(teacher_logits / temperature), float32."""
    z = np.asarray(teacher_logits, dtype=np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    soft = np.exp(z)
    soft /= soft.sum(axis=1, keepdims=True)
    hard = np.eye(teacher_logits.shape[1])[np.asarray(labels)]
    return ((1.0 - weight) * hard + weight * soft).astype(np.float32)


def _ids(data: Prepared) -> list[str]:
    """The images the teacher scores, in order: training, then validation (never test)."""
    return [*data.split.train["image_id"], *data.split.val["image_id"]]


def _key(teacher: ModelRef, data: Prepared) -> str:
    """Teacher (its weights file's bytes) x the images it scores (train + validation as a set, so the folds of a
    cross-validation share one entry)."""
    assert teacher.keras_path is not None
    sha = hashlib.sha256()
    with open(teacher.keras_path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    return digest(sha.hexdigest(), data.dataset_id, sorted(_ids(data)))


def _read(path: Path, ids: list[str]) -> np.ndarray | None:
    """The cached logits in the order of `ids`, or None (no entry, or an unreadable one: recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as entry:
            cached_ids, logits = [str(i) for i in entry["image_ids"]], entry["logits"]
        row = {image_id: i for i, image_id in enumerate(cached_ids)}
        return logits[[row[i] for i in ids]].astype(np.float32)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("teacher cache %s unreadable (%s): computing it again", path, exc)
        return None


def _write(path: Path, ids: list[str], logits: np.ndarray) -> None:
    """Atomically (a killed run leaves no half-written entry); a cache that cannot be written only costs time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, image_ids=np.array(ids), logits=logits.astype(np.float32))
        os.replace(tmp, path)
    except OSError as exc:
        log.warning("could not cache the teacher's logits at %s: %s", path, exc)


def _load_checked(teacher: ModelRef, data: Prepared):
    """The teacher's Keras model, once it is known to speak the data's classes and to end in a dermsweep head."""
    model, teacher = load_resolved(teacher)
    _check_classes(teacher, data)
    try:
        model.get_layer(TEACHER_LOGITS_LAYER)
    except ValueError:
        raise ConfigError(
            f"the teacher {teacher.describe()} has no {TEACHER_LOGITS_LAYER!r} layer: use a model dermsweep shipped "
            "(a run's, an ensemble's or a cross-validation's)"
        ) from None
    return model


def _check_classes(teacher: ModelRef, data: Prepared) -> None:
    if list(teacher.class_names) != list(data.class_names):
        raise ConfigError(
            f"the teacher {teacher.describe()} knows classes {teacher.class_names}, the data has {data.class_names}: "
            "a teacher must be trained on the same classes, in the same order"
        )


def _teacher_logits(cfg, data: Prepared, teacher: ModelRef, model, batch_size: int) -> np.ndarray:
    """The teacher's logits for the training then validation images, read at the teacher's own input size."""
    import keras

    head = model.get_layer(TEACHER_LOGITS_LAYER)
    logits_model = keras.Model(model.inputs, head.input)
    height, width = teacher.input_size
    images = data
    if (height, width) != tuple(data.x["train"].shape[1:3]):
        split_seed = int(cfg.data.split.seed if cfg.data.split.seed is not None else cfg.seed)
        images = prepare(cfg.data, height, width, split_seed, cfg.get("cache_dir"))
        if _ids(images) != _ids(data):
            raise RuntimeError("the data split differs at the teacher's input size")  # a bug, not a user error
    x = np.concatenate([images.x["train"], images.x["val"]])
    log.info("teacher %s: scoring %d images at %dx%d (once: cached)", teacher.describe(), len(x), height, width)
    # In tenths, each said: an ensemble with test-time views takes minutes on a CPU.
    step = max(batch_size, -(-len(x) // 10))
    parts = []
    for start in range(0, len(x), step):
        parts.append(predict(logits_model, eval_dataset(x[start : start + step], batch_size)))
        done = min(start + step, len(x))
        if done < len(x):
            log.info("teacher: %d/%d images scored (%.0f%%)", done, len(x), 100 * done / len(x))
    return np.concatenate(parts).astype(np.float32)


def _shipped(model, logits: np.ndarray) -> np.ndarray:
    """The log of the probabilities the teacher ships for these raw logits (its final layer applied to them)."""
    import keras

    probs = keras.ops.convert_to_numpy(model.get_layer(TEACHER_LOGITS_LAYER)(logits))
    return np.log(np.clip(probs, 1e-12, 1.0)).astype(np.float32)
