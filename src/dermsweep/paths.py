"""Where dermsweep's configuration lives: `conf/` (with `conf/sweep` -> `sweeps/`) beside the source in a checkout,
or inside the package in an installed wheel, so `python -m dermsweep.train` and `dermsweep demo` work from either."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> Path:
    for candidate in (PACKAGE / "conf", PACKAGE.parents[1] / "conf"):
        if (candidate / "config.yaml").is_file():
            return candidate
    raise ConfigError(
        f"dermsweep's configuration was not found (looked for conf/config.yaml in {PACKAGE} and "
        f"{PACKAGE.parents[1]}); reinstall dermsweep"
    )


def sweep_file(name: str) -> Path:
    """The definition of sweep `name` (conf/sweep/<name>.yaml)."""
    path = conf_dir() / "sweep" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (conf_dir() / "sweep").glob("*.yaml"))
        raise ConfigError(f"no sweep definition {name!r} (known: {', '.join(known)})")
    return path
