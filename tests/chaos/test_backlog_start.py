"""Scenario 6: a worker started on a backlog of jobs, polls and reaps."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.chaos.harness import broker_env, check_invariants, scenario


@pytest.mark.parametrize("start", range(3))
def test_a_worker_started_on_a_backlog_dead_letters_nothing(
    tmp_path: Path, start: int, broker: dict[str, str]
) -> None:
    """Creates on many accounts, with polls and a reap due, all waiting when a worker with
    eight threads starts: its first messages race, and none is dead-lettered. On each job broker."""
    with scenario(tmp_path, **broker_env(broker)) as world:
        accounts = world.add_tenants(12)
        world.processes.start("scheduler", "scheduler")
        world.processes.worker("worker", threads=2)
        world.submit(accounts, 1)
        deadline = time.monotonic() + 30
        while world.states().get("pending_audit", 0) < len(accounts) // 2:
            assert time.monotonic() < deadline, world.processes.tail()
            time.sleep(0.2)
        world.processes.stop("worker")
        world.submit(accounts, 2)
        time.sleep(3)  # polls and reaps come due, messages pile up, with no worker to take them
        world.processes.worker()
        world.wait_settled(timeout=90)
        figures = check_invariants(world)
        print(f"backlog start {start}: {figures}")
