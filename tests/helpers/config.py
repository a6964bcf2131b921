"""The repository's paths, config composition as train.py does it, and the smallest real training run."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONF = REPO / "conf"
SHARED = REPO.parent / "shared"
HAM10000 = SHARED / "data" / "ham10000"
WEIGHTS = SHARED / "weights"


def compose(overrides: list[str] | None = None):
    """The config train.py would get for these command-line overrides."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(str(CONF), version_base="1.3"):
        return hydra_compose("config", overrides=list(overrides or []))


# The smallest real training run: generated data, the smoke trainer, a random-init MobileNet at 64x64.
SMALLEST = ["data=synthetic", "trainer=smoke", "model=mobilenet_v1", "resolution=64x64", "data.max_images=140"]


def tiny_run(store: Path, experiment: str) -> list[str]:
    """Overrides for the smallest real training run (SMALLEST) into its own store under `store`."""
    return [
        *SMALLEST,
        f"tracking.uri=sqlite:///{store}/mlflow.db",
        f"experiment={experiment}",
        f"cache_dir={store}/cache",
    ]
