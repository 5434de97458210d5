"""Scenario 4: two schedulers; the leader is killed; the standby takes over."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.chaos.harness import broker_env, check_invariants, scenario


def test_a_standby_scheduler_takes_over_within_the_lease(
    tmp_path: Path, broker: dict[str, str]
) -> None:
    """SIGKILL the leading scheduler: the standby ticks within the lease TTL (plus one tick),
    and the audits it polls resolve. On each job broker."""
    with scenario(tmp_path, **broker_env(broker)) as world:
        accounts = world.add_tenants(10)
        world.processes.worker("worker", threads=4)
        world.processes.start("sched-1", "scheduler", "--node", "sched-1")
        world.processes.start("sched-2", "scheduler", "--node", "sched-2")
        world.submit(accounts, 2)
        rt = world.runtime
        deadline = time.monotonic() + 20
        leader = None
        while leader is None and time.monotonic() < deadline:
            leader = rt.store.redis.get(rt.store.keys.leader())
            time.sleep(0.1)
        assert leader in ("sched-1", "sched-2")
        standby = "sched-2" if leader == "sched-1" else "sched-1"
        time.sleep(2)
        world.processes.kill(str(leader))
        killed = time.monotonic()
        took_over = None
        while time.monotonic() - killed < 10:
            ticks = rt.store.redis.hgetall(rt.store.keys.ticks())
            if ticks.get("leader") == standby:
                took_over = time.monotonic() - killed
                break
            time.sleep(0.05)
        ttl, tick = world.settings.leader_ttl_seconds, world.settings.tick_seconds
        assert took_over is not None, world.processes.tail()
        assert took_over <= ttl + tick + 1.0, took_over
        world.wait_settled(timeout=90)
        figures = check_invariants(world)
        print(json.dumps({"takeover_seconds": round(took_over, 2), **figures}))
