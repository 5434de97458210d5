"""Every test here is a chaos scenario: real processes, a Redis that dies, an API that fails."""

from __future__ import annotations

import pytest

SCENARIO_TIMEOUT = 400


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the scenarios, so `scripts/test -m "not chaos"` leaves them out, and give each the
    time a scenario of real processes and audits needs (its own loops are bounded too)."""
    for item in items:
        if "tests/chaos/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.chaos)
            item.add_marker(pytest.mark.timeout(SCENARIO_TIMEOUT))
