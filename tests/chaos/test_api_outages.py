"""Scenario 5: the API refusing connections for 30 s, then hanging for 30 s."""

from __future__ import annotations

import time
from pathlib import Path

from tests.chaos.harness import FINAL, broker_env, check_invariants, scenario

OUTAGE_SECONDS = 30


def test_an_api_that_refuses_then_hangs_stalls_no_account_for_good(
    tmp_path: Path, broker: dict[str, str]
) -> None:
    """Refused connections are certain failures: jobs wait on back-off and go through once the
    API is back, none unconfirmed. A hanging API leaves at most each account's create in
    flight undecided; the account's other jobs wait, certain, and go through after it.
    On each job broker."""
    with scenario(tmp_path, **broker_env(broker)) as world:
        refused_accounts = world.add_tenants(5)
        hung_accounts = world.add_tenants(5)
        world.processes.worker()
        world.processes.start("scheduler", "scheduler")
        world.gate.refuse()
        refused = world.submit(refused_accounts, 2)
        time.sleep(OUTAGE_SECONDS)
        world.gate.admit()
        deadline = time.monotonic() + 90
        while not all(world.runtime.jobs.require(j).state in FINAL for j in refused):
            assert time.monotonic() < deadline, world.processes.tail()
            time.sleep(0.5)
        assert all(world.runtime.jobs.require(j).state != "unconfirmed" for j in refused)
        world.admin.set_faults([{"kind": "stall", "seconds": OUTAGE_SECONDS}])
        world.submit(hung_accounts, 2)
        time.sleep(OUTAGE_SECONDS)
        world.admin.set_faults([])
        world.wait_settled(timeout=120)
        figures = check_invariants(world)
        print(f"api outages: {figures}")
        # Only a create in flight when the API began to hang can be left undecided.
        assert figures["unconfirmed_undecided"] <= len(hung_accounts), figures
