"""Scenario 3: Redis killed (-9) and started again, during submissions, retry waits and polls."""

from __future__ import annotations

import time
from pathlib import Path

from tests.chaos.harness import (
    AUDIT_SECONDS,
    broker_env,
    check_invariants,
    scenario,
    start_callbacks,
)

DOWN_SECONDS = 5


def test_redis_kill_and_restart_loses_nothing(tmp_path: Path, broker: dict[str, str]) -> None:
    """With an append-only file, a Redis that dies three times (while creates are in flight,
    while jobs wait for their retry, while audits are polled) loses no job and no sign id:
    workers, the scheduler and the callback receiver reconnect by themselves. On each job
    broker (on RabbitMQ, the messages outlive the state Redis's deaths; on Redis, they die and
    come back with it)."""
    with scenario(tmp_path, **broker_env(broker)) as world:
        start_callbacks(world)
        accounts = world.add_tenants(30, callbacks=True)
        world.admin.set_faults(
            [{"kind": "latency", "seconds": 1.5, "rate": 0.6, "operations": ["create"]}]
        )
        world.processes.worker("worker-a", threads=8)
        world.processes.worker("worker-b", threads=8)
        world.processes.start("scheduler", "scheduler")
        world.submit(accounts, 2)
        # 1. During submissions: creates are waiting for the API's answer.
        time.sleep(0.8)
        _bounce(world)
        # 2. During retry waits: 429s with a Retry-After past the outage.
        more = world.add_tenants(10, callbacks=True)
        world.admin.set_faults([{"kind": "rate_limit", "seconds": 8, "operations": ["create"]}])
        world.submit(more, 1)
        time.sleep(2)
        _bounce(world)
        world.admin.set_faults([])
        # 3. During polling: audits pending, the scheduler claiming due signatures.
        time.sleep(AUDIT_SECONDS / 2)
        _bounce(world)
        world.wait_settled(timeout=150)
        world.wait_adopted(timeout=60)
        figures = check_invariants(world, callbacks=True)
        print(f"redis restarts: {figures}")


def _bounce(world: object) -> None:
    world.redis_server.kill()  # type: ignore[attr-defined]
    time.sleep(DOWN_SECONDS)
    world.redis_server.start()  # type: ignore[attr-defined]
