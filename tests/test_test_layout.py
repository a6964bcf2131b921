"""The tests' own layout: shared helpers live in tests/helpers/ (see its docstring), fixtures and hooks in
tests/conftest.py, and no test module imports conftest or another test module (pytest imports each test module
once by itself; a second import through another module runs its top level again and couples the files)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from helpers.config import REPO

TESTS = REPO / "tests"


def imported_modules(path) -> list[tuple[int, str]]:
    """(line, top-level module name) of every import in the file, at any depth (in functions too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name.split(".")[0]) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module.split(".")[0]))
    return found


def forbidden(name: str) -> bool:
    return name == "conftest" or name.startswith("test_")


@pytest.mark.parametrize("folder", ["tests", "tests/helpers"])
def test_no_test_module_or_helper_imports_conftest_or_a_test_module(folder):
    files = sorted((REPO / folder).glob("*.py"))
    assert files
    bad = [
        f"{path.relative_to(REPO)}:{line}: import {name}"
        for path in files
        for line, name in imported_modules(path)
        if forbidden(name)
    ]
    assert not bad, "import shared helpers from tests/helpers/ instead:\n" + "\n".join(bad)


def test_the_rule_is_checked_on_real_imports(tmp_path):
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "import os\nfrom conftest import REPO\nimport test_other as t\n"
        "def f():\n    from test_gains import K\n    from helpers.config import compose\n"
    )
    names = [name for _, name in imported_modules(sample)]
    assert [n for n in names if forbidden(n)] == ["conftest", "test_other", "test_gains"]
    assert not forbidden("helpers") and not forbidden("os")


def test_helpers_are_the_tests_own_package():
    import helpers

    assert Path(helpers.__file__).resolve() == TESTS / "helpers" / "__init__.py"
    assert (TESTS / "helpers" / "__init__.py").read_text().strip()
    assert not (TESTS / "__init__.py").exists()  # pytest's "prepend" mode then puts tests/ on sys.path
