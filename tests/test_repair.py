"""Whatever dies between two steps, signq's own state in Redis owns the job and repairs it."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import pytest
import redis

from tests.conftest import delete_prefix
from tests.system import System, build_system
from worker import actors
from worker.attempt import RetryLater
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.jsms import SignRequest
from worker.settings import RateLimits
from worker.store import Claim


def die(_ids: Sequence[str]) -> None:
    """A send that never happens: the process is killed right there."""
    raise ConnectionError("killed here")


def outbox_due(system: System, job_id: str) -> float | None:
    """When the reaper sends this job a message if nothing has started it (None: not owned)."""
    store = system.runtime.store
    return store.redis.zscore(store.keys.outbox(), job_id)


def make_due(system: System, job_id: str) -> None:
    """Let the outbox entry's time come, as if the wait had passed."""
    store = system.runtime.store
    store.redis.zadd(store.keys.outbox(), {job_id: 0})
    store.redis.hset(store.keys.job(job_id), "run_at", 0)


def test_a_retry_delayed_job_is_owned_by_the_outbox(system: System) -> None:
    """A transient error reschedules the job; if its delayed message is lost (a worker's
    reconnect drops its delay queue), the reaper sends it at its due time plus the grace."""
    account = system.tenant()
    system.admin.set_faults(
        [{"kind": "rate_limit", "seconds": 40, "count": 1, "operations": ["query"]}],
        system.app_key(account),
    )
    job = system.runtime.jobs.query(account, 1).job_id
    with pytest.raises(RetryLater) as raised:
        system.drain()
    assert raised.value.delay_ms == 40_000
    due = outbox_due(system, job)
    assert due is not None
    grace = system.settings.outbox_grace_seconds * 1000
    assert due >= system.runtime.store.time_ms() + 40_000 + grace - 2000
    assert system.runtime.reaper.tick().resent == 0
    make_due(system, job)
    assert system.runtime.reaper.tick().jobs == [job]
    assert system.drain() == ["failed"]  # sign id 1 does not exist: 50102, at last an answer
    assert outbox_due(system, job) is None


def test_an_early_duplicate_of_a_rescheduled_job_is_dropped(system: System) -> None:
    """A second message for a job waiting for its retry time does not run it early."""
    account = system.tenant()
    system.admin.set_faults(
        [{"kind": "rate_limit", "seconds": 40, "count": 4, "operations": ["query"]}],
        system.app_key(account),
    )
    job = system.runtime.jobs.query(account, 1).job_id
    with pytest.raises(RetryLater):
        system.drain()
    assert system.runtime.pipeline.run(job) == "early"
    assert system.runtime.jobs.require(job).attempts == 1


def test_a_throttled_job_is_owned_by_the_outbox(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """A job held back by the rate limit is rescheduled with an outbox entry, not only a delayed
    message."""
    limited = build_system(emulator_server, admin, rate_limit=0.001, rate_burst=1)
    try:
        account = limited.tenant()
        first = limited.runtime.jobs.query(account, 1).job_id
        second = limited.runtime.jobs.query(account, 2).job_id
        limited.sent[:] = [first]
        assert limited.drain() == ["failed"]
        limited.sent[:] = [second]
        with pytest.raises(RetryLater):
            limited.drain()
        assert outbox_due(limited, second) is not None
        assert limited.state(second) == "queued"
    finally:
        limited.runtime.close()
        delete_prefix(limited.settings.redis_url, limited.settings.prefix)


def test_a_message_sent_but_never_started_is_sent_again(system: System) -> None:
    """The outbox keeps a queued job until its run starts: a message lost after it was sent is
    replaced once the redelivery time has passed, and only then."""
    account = system.tenant()
    job = system.runtime.jobs.query(account, 1).job_id
    assert system.sent == [job]
    system.sent.clear()
    system.runtime.store.sent(60_000, [job])
    assert system.runtime.reaper.tick().resent == 0
    make_due(system, job)
    assert system.runtime.reaper.tick().jobs == [job]
    assert system.drain() == ["failed"]
    assert outbox_due(system, job) is None


def test_a_reaper_killed_before_sending_loses_no_expired_lease(system: System) -> None:
    """The pass moves an expired lease into the outbox before sending: if it dies at the send,
    the next pass sends the job."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "租约过期").job_id
    system.sent.clear()
    system.runtime.store.start(job, 0, RateLimits(burst=1, account_burst=1))
    reaper = system.runtime.reaper
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(system.runtime.dispatch, "jobs", die)
        with pytest.raises(ConnectionError):
            reaper.tick()
    store = system.runtime.store
    assert store.redis.zscore(store.keys.inflight(), job) is None
    assert outbox_due(system, job) is not None
    assert reaper.tick().jobs == [job]
    # Its run is uncertain; the API never saw the first attempt, so the retry settles it.
    assert system.drain() == ["pending_audit"]


def test_a_reaper_killed_before_sending_loses_no_probe(system: System) -> None:
    """A due probe moves its account's head job into the outbox in the same step that takes it
    off the probe schedule."""
    account = system.tenant()
    outside = system.runtime.client.create(system.credentials(account), SignRequest("外部的"))
    job = system.runtime.jobs.create(account, "被挡住").job_id
    assert system.drain() == ["blocked"]
    store = system.runtime.store
    store.redis.zadd(store.keys.probes(), {account: 0})
    reaper = system.runtime.reaper
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(system.runtime.dispatch, "jobs", die)
        with pytest.raises(ConnectionError):
            reaper.tick()
    assert store.redis.zscore(store.keys.probes(), account) is None
    assert outbox_due(system, job) is not None
    system.admin.force(outside, status=1)
    assert reaper.tick().jobs == [job]
    assert system.drain() == ["pending_audit"]


def test_leases_and_the_reaper_read_redis_clock_not_the_host(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process whose clock runs a minute ahead neither sees a live lease as expired nor sets
    one that outlives its holder."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "时钟").job_id
    system.sent.clear()
    real_time = time.time
    monkeypatch.setattr(time, "time", lambda: real_time() + 60)
    system.runtime.store.start(job, 30_000, RateLimits(burst=1, account_burst=1))
    assert system.runtime.reaper.tick().expired_leases == 0
    store = system.runtime.store
    deadline = store.redis.zscore(store.keys.inflight(), job)
    assert deadline is not None
    assert abs(deadline - (store.time_ms() + 30_000)) < 5000
    system.runtime.pipeline.leases.store.renew(30_000, [job])
    renewed = store.redis.zscore(store.keys.inflight(), job)
    assert renewed is not None
    assert abs(renewed - (store.time_ms() + 30_000)) < 5000


def test_a_sign_id_is_recorded_once_redis_answers_again(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The API accepted the create while Redis was away: the run keeps trying to record the
    sign id (with back-off) instead of losing it, and the job is pending audit."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "雷迪斯重启").job_id
    store = system.runtime.store
    real = store.apply
    failures = iter([True, True, True])

    def flaky(change: Any) -> Any:
        if change.to == "pending_audit" and next(failures, False):
            raise redis.exceptions.ConnectionError("Connection refused")
        return real(change)

    monkeypatch.setattr(store, "apply", flaky)
    assert system.drain() == ["pending_audit"]
    assert system.clock.slept == [0.1, 0.2, 0.4]
    record = system.runtime.jobs.require(job)
    (sign_id,) = system.admin.signatures(system.app_key(account))
    assert record.sign_id == sign_id


def test_a_late_answer_settles_an_unconfirmed_create(system: System) -> None:
    """A frozen worker's create succeeded after its lease ran out and a second run marked the
    job unconfirmed: the late sign id settles the job instead of being dropped."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "迟到的").job_id
    system.sent.clear()
    pipeline = system.runtime.pipeline
    reply = system.runtime.store.start(job, 0, RateLimits(burst=1, account_burst=1))
    frozen = _attempt(system, reply)
    sign_id = system.runtime.client.create(frozen.creds, SignRequest("迟到的"))
    system.runtime.reaper.tick()
    assert system.drain() == ["unconfirmed"]
    assert pipeline._accepted(frozen, sign_id) == "pending_audit"
    record = system.runtime.jobs.require(job)
    assert (record.state, record.sign_id) == ("pending_audit", sign_id)
    types = [e["type"] for e in system.events(account)]
    assert types.count("signature.submitted") == 1
    assert system.admin.stats(system.app_key(account))["duplicate_creates"] == 0


def test_a_late_answer_for_a_finished_job_is_tracked(system: System) -> None:
    """A sign id that arrives after its job was abandoned is still tracked, so its audit result
    is seen and published."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "放弃了").job_id
    system.sent.clear()
    reply = system.runtime.store.start(job, 30_000, RateLimits(burst=1, account_burst=1))
    attempt = _attempt(system, reply)
    sign_id = system.runtime.client.create(attempt.creds, SignRequest("放弃了"))
    system.runtime.store.redis.hset(system.runtime.store.keys.job(job), "state", "queued")
    system.runtime.jobs.cancel(job)
    assert system.runtime.pipeline._accepted(attempt, sign_id) == "cancelled"
    assert system.runtime.tracker.get(account, sign_id) is not None


def test_runtime_and_metrics_are_built_once_under_racing_threads(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Eight worker threads taking their first message at once build one runtime and one set
    of metrics, never two (prometheus-client refuses a second registration)."""
    from worker import metrics as metrics_module  # noqa: PLC0415

    builds: list[int] = []
    real_build = actors.Runtime.build

    def slow_build(*args: Any, **kwargs: Any) -> Any:
        builds.append(1)
        time.sleep(0.05)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(actors.Runtime, "build", slow_build)
    monkeypatch.setattr(actors, "_runtime", None)
    monkeypatch.setattr(metrics_module, "_metrics", None)
    monkeypatch.setattr(metrics_module, "Metrics", _CountingMetrics)
    _CountingMetrics.made = 0
    start = threading.Barrier(8)
    seen: list[object] = []

    def first_message() -> None:
        start.wait()
        seen.append(actors.runtime())
        seen.append(metrics_module.metrics())

    threads = [threading.Thread(target=first_message) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(builds) == 1
    assert _CountingMetrics.made == 1
    assert len({id(x) for x in seen}) == 2
    rt = actors.runtime()
    actors.set_runtime(None)
    rt.close()


def test_the_runtime_is_built_before_the_first_message() -> None:
    """The boot middleware builds the process's runtime before any worker thread runs."""
    saved = actors._runtime
    actors.set_runtime(None)
    try:
        actors.Boot().before_worker_boot(actors.setup(), None)
        assert actors._runtime is not None
        actors._runtime.close()
    finally:
        actors.set_runtime(saved)


def test_actors_meeting_a_redis_outage_never_dead_letter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """run_job asks to be retried without counting it as a failure; poll and reap drop their
    message (their work comes due again by itself)."""
    import dramatiq  # noqa: PLC0415

    class Down:
        def __getattr__(self, _name: str) -> Any:
            raise redis.exceptions.ConnectionError("Connection refused")

    monkeypatch.setattr(actors, "_runtime", Down())
    with pytest.raises(dramatiq.Retry):
        actors.run_job("j")
    assert actors._retry_when(99, dramatiq.Retry("redis unavailable")) is True
    actors.poll(["a:1"])
    actors.reap(True)
    actors.cleanup()


class _CountingMetrics:
    made = 0

    def __init__(self) -> None:
        type(self).made += 1
        time.sleep(0.05)

    def observe_api(self, operation: str, code: int | None, seconds: float) -> None:
        """Nothing to count here."""

    def count_events(self, types: list[str]) -> None:
        """Nor here."""


def _attempt(system: System, claim: Claim) -> Any:
    """The Attempt a run would build from the start script's claim."""
    from worker.attempt import Attempt  # noqa: PLC0415
    from worker.jobs import JobRecord  # noqa: PLC0415

    assert claim.outcome == "run"
    job = JobRecord.from_hash(claim.snapshot)
    creds = system.runtime.accounts.credentials(job.account, claim.app_key, claim.stored_secret)
    return Attempt(job, creds, claim.previous, claim.clock_ms, system.clock, system.clock())


def test_a_settled_job_left_in_the_outbox_is_cleaned_by_its_next_delivery(system: System) -> None:
    """A frozen run that records its outcome after the reaper re-sent its job leaves the job in
    the outbox; the re-sent message finds it settled and takes it out, so it is not sent again
    every redelivery period."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "已经完成").job_id
    assert system.drain() == ["pending_audit"]
    store = system.runtime.store
    store.redis.zadd(store.keys.outbox(), {job: 0})  # what the reaper's lease move left
    assert system.runtime.reaper.tick().jobs == [job]
    assert system.drain() == ["settled"]
    assert outbox_due(system, job) is None
