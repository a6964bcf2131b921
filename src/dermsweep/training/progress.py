"""What a training run prints per epoch: one line (the console's format: dermsweep.quiet.ConsoleFormatter).
Everything else the run knows is in MLflow."""

from __future__ import annotations

import math
import time


def epoch_line(
    epoch: int, last_epoch: int, phase: str, figures: dict[str, float], objective: str, started: float
) -> str:
    """`epoch  3/20  finetune  loss 1.2345  val_balanced_accuracy 0.6123  lr 2.0e-04  41s  (total 2m05s)`: the
    training loss, the run's objective on validation, the learning rate, this epoch's and the run's seconds."""
    seconds = figures.get("epoch_seconds", math.nan) + figures.get("val_seconds", 0.0)
    width = len(str(last_epoch))
    return (
        f"epoch {epoch:>{width}}/{last_epoch}  {phase:<8}  loss {figures.get('loss', math.nan):.4f}  "
        f"{objective} {figures.get(objective, math.nan):.4f}  lr {figures.get('lr', math.nan):.1e}  "
        f"{seconds:.0f}s  (total {duration(time.perf_counter() - started)})"
    )


def duration(seconds: float) -> str:
    """41s, 2m05s, 1h02m."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
