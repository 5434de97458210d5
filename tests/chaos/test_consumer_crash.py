"""Scenario 7: an event consumer killed mid-batch; another takes over its pending entries."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.chaos.harness import check_invariants, scenario

ROOT = Path(__file__).resolve().parents[2]


def test_a_consumer_killed_mid_batch_loses_no_event(tmp_path: Path) -> None:
    """Kill -9 a consumer in the middle of its batch: its unacknowledged entries are claimed by
    the next consumer, every event is handled (once, by an idempotent handler), and nothing
    stays pending."""
    with scenario(tmp_path) as world:
        accounts = world.add_tenants(10)
        world.processes.worker("worker", threads=4)
        world.processes.start("scheduler", "scheduler")
        world.submit(accounts, 2)
        world.wait_settled(timeout=90)
        rt = world.runtime
        prefix = world.settings.prefix
        argv = [sys.executable, "-m", "tests.chaos.consumer", world.redis_server.url, prefix]
        first = subprocess.Popen([*argv, "c1"], cwd=ROOT, stdout=subprocess.PIPE)
        assert first.stdout is not None
        assert first.stdout.readline().strip() == b"consuming"
        deadline = time.monotonic() + 20
        while int(rt.store.redis.get(f"{prefix}:test:deliveries") or 0) < 15:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        first.kill()
        first.wait(timeout=10)
        first.stdout.close()
        events = rt.store.redis.xlen(rt.store.keys.events())
        pending = rt.store.redis.xpending(rt.store.keys.events(), "billing")["pending"]
        assert pending > 0, "the kill should leave entries pending"
        second = subprocess.Popen([*argv, "c2"], cwd=ROOT, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while (
                rt.store.redis.scard(f"{prefix}:test:handled") < events
                or rt.store.redis.xpending(rt.store.keys.events(), "billing")["pending"]
            ):
                assert time.monotonic() < deadline, "the second consumer did not finish"
                time.sleep(0.1)
        finally:
            second.kill()
            second.wait(timeout=10)
        ids = {e["id"] for e in world.events()}
        assert rt.store.redis.smembers(f"{prefix}:test:handled") == ids
        deliveries = int(rt.store.redis.get(f"{prefix}:test:deliveries") or 0)
        # At least once: the entries in flight at the kill were delivered twice, no more.
        assert events <= deliveries <= events + pending
        check_invariants(world)
