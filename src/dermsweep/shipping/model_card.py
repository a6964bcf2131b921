"""The model card: what a promoted version is, how well it did on data it never chose by, how it decides, and what
it must not be used for. Promotion writes it as the registered version's description (the MLflow UI's Models page
shows it) and as `model_card.md` in the source run."""

from __future__ import annotations

from ..tracking import run_format as rf
from .ranking import RunRow

SCORES = ("balanced_accuracy", "macro_f1", "macro_auc", "accuracy")


def model_card(name: str, version: str, run: RunRow, meta: dict) -> str:
    def val(section: str, metric: str) -> str:
        v = run.metric(rf.metric(section, metric))
        return "n/a" if v is None else f"{v:.3f}"

    lines = [
        f"# {name} v{version}",
        "",
        "**Research tool, not a diagnosis.** Trained on dermatoscopic images (HAM10000: akiec, bcc, bkl, df, mel, nv, "
        "vasc); it can be wrong and must not be used to diagnose, treat or rule out any condition.",
        "",
        "## Model",
        f"- source run `{run.run_id}` ({run.name}); role {run.role or 'single'}",
        f"- backbone {meta.get('backbone', 'ensemble' if meta.get('members') else 'n/a')}, input "
        f"{meta.get('input_height')}x{meta.get('input_width')} RGB pixels 0-255, {run.params.get('model.params', '?')}"
        " parameters",
        f"- data: dataset `{meta.get('dataset_id', '?')}`, lesion-grouped split `{meta.get('split_id', '?')}`",
        "",
        "## Scores (the shipped model, with its evaluation-time gains)",
        "| split | " + " | ".join(SCORES) + " |",
        "| --- |" + " --- |" * len(SCORES),
        "| validation (every choice was made here) | " + " | ".join(val(rf.FINAL_VAL, m) for m in SCORES) + " |",
        "| test (scored once, never used for a choice) | " + " | ".join(val(rf.TEST, m) for m in SCORES) + " |",
        "",
    ]
    inference = meta.get("inference") or {}
    if inference:
        lines += [
            "## How it infers",
            f"- test-time views: {inference.get('views')}; temperature {inference.get('temperature', 1):.3f}; "
            f"prior adjustment tau {inference.get('prior_tau', 0):.2f} (all chosen on validation)",
            f"- calibration error (ECE) on validation: {val(rf.CALIBRATION, 'ece_val_before')} before, "
            f"{val(rf.CALIBRATION, 'ece_val_after')} after",
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
        "- HAM10000 comes from two sites and mostly light skin; other cameras, sites and skin tones are untested.",
        "- Seven classes only: a lesion of any other kind still gets one of these seven labels.",
        "- Measure it on your own labelled data before relying on it: `dermsweep evaluate DATA --model "
        f"models:/{name}/{version}`.",
    ]
    return "\n".join(lines) + "\n"
