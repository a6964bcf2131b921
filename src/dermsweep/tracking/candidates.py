"""The candidate runs of an experiment (run_format.is_candidate), every page of them: what `dermsweep runs`,
promotion and a sweep's warm start choose from."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from . import run_format as rf

PAGE_SIZE = 1000  # MLflow's search_runs returns at most this many per call on some stores; page beyond it


def search_all(client: Any, experiment_ids: list[str], filter_string: str = "") -> Iterator[Any]:
    """Every run matching ``filter_string``, page by page (search_runs stops at max_results otherwise)."""
    page: str | None = None
    while True:
        runs = client.search_runs(experiment_ids, filter_string=filter_string, max_results=PAGE_SIZE, page_token=page)
        yield from runs
        page = runs.token
        if not page:
            return


def candidate_runs(client: Any, experiment_ids: list[str], filter_string: str = "") -> list[Any]:
    """The candidate runs among those matching ``filter_string``, all pages."""
    return [r for r in search_all(client, experiment_ids, filter_string) if rf.is_candidate(r.data.tags)]
