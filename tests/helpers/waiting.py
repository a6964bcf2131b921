"""Polling for something another process or thread makes happen."""

from __future__ import annotations

import time

import pytest


def wait_for(predicate, timeout: float, what: str):
    """predicate()'s first truthy value, polled every 0.3 s; the test fails naming `what` after `timeout` s."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.3)
    pytest.fail(f"{what} within {timeout:.0f} s")
