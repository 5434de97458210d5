"""Tracking: polls read only what is due, status changes are published once, leaders fail over."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import pytest
import redis

from tests.conftest import delete_prefix
from tests.system import System, build_system, inline_scheduler
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.jsms import SignRequest
from worker.testing import wait_for


@pytest.fixture
def system(emulator_server: EmulatorServer, admin: EmulatorAdmin) -> Iterator[System]:
    """A system on its own prefix; jobs and polls run when the test says."""
    sys_ = build_system(emulator_server, admin, poll_initial_seconds=0.05)
    yield sys_
    sys_.runtime.close()
    delete_prefix(sys_.settings.redis_url, sys_.settings.prefix)


def kinds(system: System, account: str) -> list[str]:
    """Event types for an account, in order."""
    return [e["type"] for e in system.events(account)]


def due_now(system: System) -> None:
    """Make every tracked signature due."""
    keys = system.runtime.store.keys
    r = system.runtime.store.redis
    r.zadd(keys.due(), dict.fromkeys(r.zrange(keys.due(), 0, -1), 0))


def test_poll_sees_the_approval_publishes_once_and_hands_the_gate_on(system: System) -> None:
    """A tick polls the due signature; the approval is one event; the next job is sent."""
    account = system.tenant()
    first = system.runtime.jobs.create(account, "第一").job_id
    second = system.runtime.jobs.create(account, "第二").job_id
    system.drain()
    sign_id = system.runtime.jobs.require(first).sign_id or 0
    scheduler = inline_scheduler(system)
    due_now(system)
    assert scheduler.tick().due == 1
    assert system.state(first) == "pending_audit"
    system.admin.force(sign_id, status=1)
    due_now(system)
    scheduler.tick()
    assert system.state(first) == "approved"
    assert system.sent == [second]
    due_now(system)
    scheduler.tick()
    approvals = [e for e in system.events(account) if e["type"] == "signature.approved"]
    assert len(approvals) == 1
    event = approvals[0]
    assert (event["sign_id"], event["job_id"], event["status"], event["previous_status"]) == (
        sign_id,
        first,
        1,
        0,
    )
    assert event["sign"] == "第一"


def test_racing_polls_and_duplicate_messages_publish_one_event(system: System) -> None:
    """Eight threads observing the same rejection at once publish exactly one event."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "竞争").job_id
    system.drain()
    sign_id = system.runtime.jobs.require(job).sign_id or 0
    system.admin.force(sign_id, status=2, reason="资质不符")
    member = f"{account}:{sign_id}"
    barrier = threading.Barrier(8)

    def poll() -> None:
        barrier.wait()
        system.runtime.tracker.poll_one(member)

    threads = [threading.Thread(target=poll) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert kinds(system, account).count("signature.rejected") == 1
    assert system.state(job) == "rejected"


def test_a_callback_racing_a_poll_publishes_once_and_keeps_the_reason(system: System) -> None:
    """Whichever of callback and poll comes first publishes; the reason from the callback stays."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "回调").job_id
    system.drain()
    sign_id = system.runtime.jobs.require(job).sign_id or 0
    system.admin.force(sign_id, status=2)
    tracker = system.runtime.tracker
    assert tracker.observe_result(account, sign_id, 2, reason="缺少证明") == "changed"
    assert tracker.poll_one(f"{account}:{sign_id}") == "same"
    (event,) = [e for e in system.events(account) if e["type"] == "signature.rejected"]
    assert event["reason"] == "缺少证明"
    assert tracker.get(account, sign_id).refuse_reason == "缺少证明"  # type: ignore[union-attr]


def test_use_status_change_is_its_own_event(system: System) -> None:
    """A resolved signature turning in use is announced as signature.use_changed."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "用起来").job_id
    system.drain()
    sign_id = system.runtime.jobs.require(job).sign_id or 0
    system.admin.force(sign_id, status=1)
    member = f"{account}:{sign_id}"
    system.runtime.tracker.poll_one(member)
    system.admin.force(sign_id, use_status=1)
    system.runtime.tracker.poll_one(member)
    used = [e for e in system.events(account) if e["type"] == "signature.use_changed"]
    assert [e["use_status"] for e in used] == [1]


def test_a_signature_gone_at_the_api_stops_being_tracked(system: System) -> None:
    """50102 on a poll: tracking ends with signature.deleted saying it was found missing."""
    account = system.tenant()
    creds = system.credentials(account)
    sign_id = system.runtime.client.create(creds, SignRequest("外部的"))
    system.admin.force(sign_id, status=2)
    assert system.runtime.tracker.track(account, [sign_id]) == 1
    assert system.runtime.tracker.poll_one(f"{account}:{sign_id}") == "first"
    system.runtime.client.delete(creds, sign_id)
    assert system.runtime.tracker.poll_one(f"{account}:{sign_id}") == "gone"
    (event,) = [e for e in system.events(account) if e["type"] == "signature.deleted"]
    assert (event["missing"], event["sign_id"], event["previous_status"]) == (True, sign_id, 2)
    assert system.runtime.tracker.get(account, sign_id) is None


def test_registered_signatures_are_learned_without_a_spurious_event(system: System) -> None:
    """The first look at a user-registered signature records it; only later changes publish."""
    account = system.tenant()
    sign_id = system.runtime.client.create(system.credentials(account), SignRequest("已有的"))
    system.runtime.tracker.track(account, [sign_id])
    assert system.runtime.tracker.poll_one(f"{account}:{sign_id}") == "first"
    assert "signature.approved" not in kinds(system, account)
    system.admin.force(sign_id, status=1)
    assert system.runtime.tracker.poll_one(f"{account}:{sign_id}") == "changed"
    assert kinds(system, account) == ["signature.approved"]


def test_pending_audits_are_checked_less_and_less_often(system: System) -> None:
    """Each poll of a pending audit doubles its interval, up to the cap; resolved ones rarely."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "等待中").job_id
    system.drain()
    sign_id = system.runtime.jobs.require(job).sign_id or 0
    member = f"{account}:{sign_id}"
    keys = system.runtime.store.keys
    redis_ = system.runtime.store.redis
    gaps = []
    for _ in range(4):
        system.runtime.tracker.poll_one(member)
        # From the check's own time (Redis's, in the script), not from before the HTTP call:
        # under load the call's time would swamp the first intervals (tens of ms here).
        checked_at = int(redis_.hget(keys.signature(account, sign_id), "checked_at"))
        gaps.append(redis_.zscore(keys.due(), member) - checked_at)
    ratios = [b / a for a, b in itertools.pairwise(gaps)]
    assert all(1.2 <= r <= 3.4 for r in ratios), gaps
    system.admin.force(sign_id, status=1)
    before = system.runtime.store.time_ms()
    system.runtime.tracker.poll_one(member)
    resolved_gap = system.runtime.store.redis.zscore(keys.due(), member) - before
    assert resolved_gap >= system.settings.poll_resolved_seconds * 1000 * 0.8


def test_polls_respect_the_rate_limit(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """A poll past the account's bucket is put back by the wait it needs, not sent."""
    system = build_system(emulator_server, admin, account_rate_limit=0.5, account_rate_burst=1)
    try:
        account = system.tenant()
        system.runtime.tracker.track(account, [10_001, 10_002])
        outcomes = system.runtime.tracker.poll([f"{account}:10001", f"{account}:10002"])
        assert outcomes == ["gone", "throttled"]
    finally:
        system.runtime.close()
        delete_prefix(system.settings.redis_url, system.settings.prefix)


def test_only_one_scheduler_leads_and_a_standby_takes_over(system: System) -> None:
    """Two schedulers: one ticks; when it stops renewing, the other leads within the TTL."""
    first = inline_scheduler(system, "node-a")
    second = inline_scheduler(system, "node-b")
    assert first.tick().leader
    assert not second.tick().leader
    assert system.runtime.store.redis.get(system.runtime.store.keys.leader()) == "node-a"
    assert not second.tick().leader
    # The leader stops renewing: its lease runs out on Redis's clock (ended here, not waited
    # for), and the standby's next tick leads.
    r, leader = system.runtime.store.redis, system.runtime.store.keys.leader()
    assert 0 < r.pttl(leader) <= system.settings.leader_ttl_seconds * 1000
    r.delete(leader)
    assert second.tick().leader
    assert not first.tick().leader
    second.resign()
    assert first.tick().leader


def test_a_tick_reads_only_what_is_due(system: System) -> None:
    """With 100,000 tracked signatures and 20 due, a tick's Redis commands do not grow with
    the tracked count: counted by the commandstats of a private Redis server this test alone
    talks to (scripts' inner commands included), so nothing else running can add to them."""
    from worker.embedded_redis import EmbeddedRedis  # noqa: PLC0415
    from worker.runtime import Runtime  # noqa: PLC0415
    from worker.scheduler import Scheduler  # noqa: PLC0415
    from worker.testing import RecordingDispatcher  # noqa: PLC0415

    with EmbeddedRedis() as server:
        settings = system.settings.with_overrides(redis_url=server.url)
        dispatcher = RecordingDispatcher()
        runtime = Runtime.build(settings, dispatch=dispatcher)
        try:
            keys, r = runtime.store.keys, runtime.store.redis
            later = runtime.store.time_ms() + 3_600_000
            pipe = r.pipeline(transaction=False)
            for start in range(0, 100_000, 10_000):
                pipe.zadd(keys.due(), {f"acct:{n}": later for n in range(start, start + 10_000)})
            pipe.execute()
            r.zadd(keys.due(), {f"acct:due{n}": 0 for n in range(20)})
            scheduler = Scheduler(runtime.store, runtime.tracker, dispatcher)
            scheduler.tick()  # the first tick loads the scripts: not what is measured
            r.zadd(keys.due(), {f"acct:due{n}": 0 for n in range(20)})
            r.config_resetstat()
            tick = scheduler.tick()
            used = _calls(r)
        finally:
            runtime.close()
    assert tick.due == 20
    assert sum(len(c) for c in dispatcher.polls) == 40
    assert 0 < used < 40, f"{used} Redis commands for one tick"


def _calls(client: redis.Redis) -> int:
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def test_a_failing_tick_does_not_stop_the_scheduler(system: System) -> None:
    """A tick that raises (Redis away, a bad sender) is logged; the loop ticks on, and resigns
    its lease when stopped."""
    from worker.scheduler import Scheduler  # noqa: PLC0415
    from worker.testing import InlineDispatcher  # noqa: PLC0415

    attempts: list[int] = []

    def failing_poll(_members: list[str]) -> None:
        attempts.append(1)
        raise ConnectionError("broker unreachable")

    scheduler = Scheduler(
        system.runtime.store,
        system.runtime.tracker,
        InlineDispatcher(run_poll=failing_poll),
        "flaky",
    )
    keys = system.runtime.store.keys
    stop = threading.Event()
    runner = threading.Thread(target=scheduler.run, args=(stop,))
    runner.start()
    try:

        def failed_thrice() -> bool:
            system.runtime.store.redis.zadd(keys.due(), {"acct:1": 0})
            return len(attempts) >= 3

        wait_for(failed_thrice, timeout=10, what="the loop to tick on after failing ticks")
    finally:
        stop.set()
        runner.join(timeout=5)
    assert not runner.is_alive()
    assert system.runtime.store.redis.get(keys.leader()) is None
