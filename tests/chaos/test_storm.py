"""Scenario 1: a fault storm on 100 accounts × 3 creates, two worker processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chaos.harness import (
    AUDIT_SECONDS,
    STORM_FAULTS,
    broker_env,
    check_invariants,
    scenario,
    start_callbacks,
)


@pytest.mark.parametrize("callbacks", [False, True], ids=["polling", "callbacks"])
def test_a_fault_storm_loses_nothing_and_stalls_no_account(
    tmp_path: Path, callbacks: bool, broker: dict[str, str]
) -> None:
    """20 % 500s before the effect and 5 % after, 3 % stalls and 3 % slow answers past the
    client's timeout, 2 % dropped connections, 5 % 429s: every job ends, no create is
    duplicated, no 50103 is unprovoked, no gate stays held. With callbacks every unconfirmed
    create is adopted; without them, each unconfirmed one did reach the API and holds nothing.
    On each job broker."""
    with scenario(tmp_path, **broker_env(broker)) as world:
        if callbacks:
            start_callbacks(world)
        accounts = world.add_tenants(100, callbacks=callbacks)
        world.admin.set_faults(STORM_FAULTS)
        world.processes.worker("worker-a", threads=8)
        world.processes.worker("worker-b", threads=8)
        world.processes.start("scheduler", "scheduler")
        world.submit(accounts, 3)
        world.wait_settled(timeout=150)
        if callbacks:
            world.wait_adopted(timeout=AUDIT_SECONDS * 3)
        figures = check_invariants(world, callbacks=callbacks)
        print(f"storm ({'callbacks' if callbacks else 'polling'}): {figures}")
