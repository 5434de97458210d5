"""Scenario 2: worker processes killed, frozen and stopped while their jobs are in flight."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.chaos.harness import broker_env, check_invariants, scenario

# Longer than the lease (4 s) and the heartbeat timeout (5 s): the reaper re-sends the frozen
# worker's jobs and Dramatiq requeues its messages before it wakes up.
FREEZE_SECONDS = 12


def test_killed_frozen_and_stopped_workers_lose_and_duplicate_nothing(
    tmp_path: Path, broker: dict[str, str]
) -> None:
    """SIGKILL a worker three times mid-run, freeze another past its lease, SIGTERM one
    mid-run: every job ends, no create is made twice, a frozen worker's late answers settle
    their jobs, and no message is dead-lettered. On each job broker."""
    with scenario(tmp_path, **broker_env(broker)) as world:
        accounts = world.add_tenants(30)
        # Creates take a while, so that every signal finds some in flight.
        world.admin.set_faults(
            [{"kind": "latency", "seconds": 0.8, "rate": 0.5, "operations": ["create"]}]
        )
        world.processes.worker("worker-a", threads=8)
        world.processes.worker("worker-b", threads=8)
        world.processes.start("scheduler", "scheduler")
        world.submit(accounts, 3)
        for _ in range(3):
            time.sleep(2.5)
            world.processes.kill("worker-a")
            world.processes.worker("worker-a", threads=8)
        time.sleep(1)
        world.processes.signal("worker-b", signal.SIGSTOP)
        time.sleep(FREEZE_SECONDS)
        world.processes.signal("worker-b", signal.SIGCONT)
        time.sleep(2)
        assert world.processes.stop("worker-a") == 0
        world.processes.worker("worker-a", threads=8)
        world.wait_settled(timeout=150)
        figures = check_invariants(world)
        print(f"workers die: {figures}")
