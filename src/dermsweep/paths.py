"""Where dermsweep's configuration lives: inside the package (`dermsweep/conf`, sweep definitions in
`dermsweep/conf/sweep`), so an installed package runs `python -m dermsweep.train` and `dermsweep demo` by itself. A
checkout shows the same folders as `conf/` and `sweeps/` at its root (symbolic links)."""

from __future__ import annotations

from pathlib import Path

from .errors import ConfigError

PACKAGE = Path(__file__).resolve().parent


def conf_dir() -> Path:
    conf = PACKAGE / "conf"
    if not (conf / "config.yaml").is_file():
        raise ConfigError(f"dermsweep's configuration is missing ({conf}/config.yaml); reinstall dermsweep")
    return conf


def sweep_file(name: str) -> Path:
    """The definition of sweep `name` (conf/sweep/<name>.yaml)."""
    path = conf_dir() / "sweep" / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (conf_dir() / "sweep").glob("*.yaml"))
        raise ConfigError(f"no sweep definition {name!r} (known: {', '.join(known)})")
    return path
