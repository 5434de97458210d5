"""Webhooks through the real thing: Dramatiq workers on Redis, the scheduler's tick fanning the
stream out, a receiver on loopback failing now and then."""

from __future__ import annotations

import itertools
import json

import pytest

from tests.receiver import receiver
from tests.system import isolated_settings, register_tenants
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.testing import in_process, wait_for

pytestmark = pytest.mark.slow


def test_order_per_account_holds_under_concurrency(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """Four accounts' jobs through eight worker threads; the receiver fails every third
    request. Each account's events arrive in stream order, one request in flight per account
    at a time, every event delivered once with a 2xx; accounts go in parallel."""
    settings = isolated_settings(
        emulator_server,
        tick_seconds=0.05,
        leader_ttl_seconds=1.0,
        webhooks_allow_private=True,
        webhook_retry_schedule="0,0.05,0.05,0.1,0.1,0.1,0.1,0.1",
    )
    failing = itertools.cycle([200, 200, 500])
    with (
        receiver(default=200) as rx,
        in_process(settings, threads=8, scheduler="hooks") as running,
    ):
        rx.script = [next(failing) for _ in range(400)]
        runtime = running.runtime
        _endpoint, rx.secret = runtime.endpoints.add(rx.url)
        accounts = register_tenants(runtime, admin, 4, "hook")
        for sign_id, account in itertools.product(range(900_001, 900_007), accounts):
            runtime.jobs.query(account, sign_id)

        def stream() -> list[dict[str, object]]:
            entries = runtime.store.redis.xrange(runtime.store.keys.events())
            return [json.loads(f["event"]) for _, f in entries]

        def all_delivered() -> bool:
            wanted = {e["id"] for e in stream() if e["account"] in accounts}
            done = {r.event["id"] for r in rx.received if r.event and r.answered == "200"}
            finished = all(
                runtime.jobs.require(j).terminal
                for a in accounts
                for j in [r.id for r in runtime.jobs.find(account=a)]
            )
            return finished and bool(wanted) and wanted <= done

        wait_for(all_delivered, timeout=60, what="every event delivered")
        events = [e for e in stream() if e["account"] in accounts]
    assert len(events) == 4 * 6 * 2  # accepted and failed for each query job
    for account in accounts:
        sent = [e["id"] for e in events if e["account"] == account]
        delivered = [
            r.event["id"]
            for r in rx.received
            if r.event and r.event["account"] == account and r.answered == "200"
        ]
        assert delivered == sent, account
    assert all(r.verified == "ok" for r in rx.received)
    assert rx.most_in_flight == 1
    assert any(r.answered == "500" for r in rx.received)
