"""Data sources: each one turns its config node (`conf/data/<name>.yaml`) into a `Catalog`.

A source module registers its loader here with the checks of its own keys; `data.source` picks one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ...checks import fail
from ...options import Options
from ..catalog import Catalog

Loader = Callable[[Any], Catalog]
SOURCES: Options[Loader] = Options("data.source")


def folder_path(key: str, value: Any) -> None:
    """A check for a folder setting: present and not blank (whether it exists is the loader's message)."""
    if value is None or not str(value).strip() or str(value) == "???":
        fail(key, value, "must point at the dataset folder")


def file_path(key: str, value: Any) -> None:
    if value is None or not str(value).strip() or not Path(str(value)).expanduser().is_file():
        fail(key, value, "no such file")


from . import folder, ham10000, isic2018, synthetic  # noqa: E402,F401  each module registers its source
