"""The model card: what a promoted version is, how well it did on data it never chose by, how it decides, and what
it must not be used for. Promotion writes it as the registered version's description (the MLflow UI's Models page
shows it) and as `model_card.md` in the source run."""

from __future__ import annotations

from ..tracking import run_format as rf
from .ranking import RunRow, number
from .training_data import TrainingData, from_params

# The scores' metric names and their column headers (words, not identifiers: a header cell reads on its own)
SCORES = {
    "balanced_accuracy": "Balanced accuracy",
    "macro_f1": "Macro F1",
    "macro_auc": "Macro AUC",
    "accuracy": "Accuracy",
}

# What is known to be missing from each data source (the card's first limit)
LIMITS = {
    "ham10000": "- HAM10000 comes from two sites and mostly light skin; other cameras, sites and skin tones are "
    "untested.",
    "synthetic": "- Trained on generated shapes, not photos of skin: a demonstration of the pipeline, not a lesion "
    "model.",
}


def model_card(name: str, version: str, run: RunRow, meta: dict, data: TrainingData | None = None) -> str:
    """The card's Markdown. `data`: what the run says it was trained on (default: read from the run's params)."""
    data = data or from_params(run.params)
    classes = ", ".join(meta.get("class_names") or []) or run.params.get("data.class_names", "").replace(",", ", ")

    def val(section: str, metric: str) -> str:
        v = run.metric(rf.metric(section, metric))
        return "n/a" if v is None else f"{v:.3f}"

    def scored(section: str, metric: str) -> str:
        """The value, with its 95% interval when the run logged one (`X_lo95`, `X_hi95`)."""
        key = rf.metric(section, metric)
        lo, hi = (number(run.metrics.get(f"{key}_{end}95")) for end in ("lo", "hi"))
        return val(section, metric) + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")

    rows = [(rf.FINAL_VAL, "validation (every choice was made here)"), (rf.TEST, "test (scored once, never chosen by)")]
    cells = [[scored(section, m) for m in SCORES] for section, _ in rows]
    intervals = any("[" in c for row in cells for c in row)
    lines = [
        f"# {name} v{version}",
        "",
        f"**Research tool, not a diagnosis.** Trained and scored on {data.described()}"
        + (f" ({classes})" if classes else "")
        + "; it can be wrong and must not be used to diagnose, treat or rule out any condition.",
        "",
        "## Model",
        f"- source run `{run.run_id}` ({run.name}); role {run.role or 'single'}",
        f"- backbone {meta.get('backbone', 'ensemble' if meta.get('members') else 'n/a')}, input "
        f"{meta.get('input_height')}x{meta.get('input_width')} RGB pixels 0-255, {run.params.get('model.params', '?')}"
        " parameters",
        f"- data: {data.described()}" + (f", {data.counts()}" if data.counts() else "") + f"; dataset "
        f"`{meta.get('dataset_id') or data.dataset_id or '?'}`, lesion-grouped split `{meta.get('split_id', '?')}`",
        *_teacher_lines(meta.get("teacher")),
        "",
        "## Scores (the shipped model, with its evaluation-time gains)",
        "",
        "| Split | " + " | ".join(SCORES.values()) + " |",
        "| :--- |" + " ---: |" * len(SCORES),
        *(f"| {label} | " + " | ".join(row) + " |" for (_, label), row in zip(rows, cells, strict=True)),
        "",
    ]
    if intervals:
        lines += ["In brackets: 95% intervals (bootstrap over the images of the split).", ""]
    if not data.real_photos:
        lines += [
            f"**These scores are on {data.described()}**: they say nothing about how it does on real lesion photos.",
            "",
        ]
    inference = meta.get("inference") or {}
    if inference:
        lines += [
            "## How it infers",
            f"- test-time views: {inference.get('views')}; temperature {inference.get('temperature', 1):.3f}; "
            f"prior adjustment tau {inference.get('prior_tau', 0):.2f} (all chosen on validation)",
            f"- calibration error (ECE) on validation: {val(rf.GAINS, 'ece_val_before')} before, "
            f"{val(rf.GAINS, 'ece_val_after')} after",
            "",
        ]
    point = meta.get("operating_point")
    if point:
        lines += [
            "## Operating point",
            f"- {point['class_name']} is flagged when its probability reaches {point['threshold']:.3f}, chosen on "
            f"validation for sensitivity {point['target_sensitivity']:.2f}: validation sensitivity "
            f"{point['val_sensitivity']:.3f}, specificity {point['val_specificity']:.3f}; test sensitivity "
            f"{val(rf.OPERATING_POINT, 'test_sensitivity')}, specificity {val(rf.OPERATING_POINT, 'test_specificity')}",
            "- predict, the REST endpoint and the web page report this flag beside the probabilities",
            "",
        ]
    lines += [
        "## Limits",
        LIMITS.get(data.source or "", "- Cameras, sites and skin tones unlike its training data's are untested."),
        "- Seven classes only: a lesion of any other kind still gets one of these seven labels.",
        "- Measure it on your own labelled data before relying on it: `dermsweep evaluate DATA --model "
        f"models:/{name}/{version}`.",
    ]
    return "\n".join(lines) + "\n"


OUTPUTS = {
    "raw": "raw logits (before its calibration)",
    "shipped": "shipped probabilities",
    "out_of_fold": "out-of-fold probabilities (each image's from the fold models that never trained on it)",
}


def _teacher_lines(teacher: dict | None) -> list[str]:
    """A distilled model names the model it learned from and how (training/distillation.py)."""
    if not teacher:
        return []
    return [
        f"- distilled from {teacher.get('description') or teacher.get('uri')} (`{teacher.get('uri')}`): trained on "
        f"its {OUTPUTS.get(teacher.get('output', 'raw'), 'predictions')} at temperature {teacher.get('temperature')} "
        f"with weight {teacher.get('weight')}, and on the labels",
        *(
            [
                f"- its teacher trained on {teacher['validation_seen']} of its {teacher.get('validation_images')} "
                "validation images: the validation figures above lean optimistic; the test figures are clean"
            ]
            if teacher.get("validation_seen")
            else []
        ),
    ]
