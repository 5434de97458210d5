"""Every test here is a chaos scenario: real processes, a Redis that dies, an API that fails."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the scenarios, so `scripts/test -m "not chaos"` leaves them out."""
    for item in items:
        if "tests/chaos/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.chaos)
