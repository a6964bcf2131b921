"""The pre-commit hooks run exactly the gates of `make lint` (one list of gates, two ways to run it)."""

from __future__ import annotations

import re

import yaml

from helpers.config import REPO


def test_pre_commit_runs_the_gates_of_make_lint():
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^lint:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe is not None, "no lint target in the Makefile"
    gates = [line.strip().replace("$(VENV)", ".venv") for line in recipe.group(1).splitlines()]
    config = yaml.safe_load((REPO / ".pre-commit-config.yaml").read_text())
    hooks = [hook for repo in config["repos"] for hook in repo["hooks"]]
    assert [hook["entry"] for hook in hooks] == gates
    assert all(hook["language"] == "system" and hook["pass_filenames"] is False for hook in hooks)
