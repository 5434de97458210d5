"""Every outcome of running a job, against the emulator over HTTP and a real Redis."""

from __future__ import annotations

import pytest

from tests.conftest import delete_prefix
from tests.helpers import requests
from tests.system import System, build_system, resolve
from worker.attempt import RetryLater
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.jsms import SignRequest
from worker.jsms.models import Status
from worker.settings import RateLimits


def kinds(system: System, account: str) -> list[str]:
    """The event types published for an account, in order."""
    return [e["type"] for e in system.events(account)]


def test_create_goes_to_pending_audit_and_is_tracked(system: System) -> None:
    """An accepted create is pending audit with its sign id, tracked and announced."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "极光推送")
    assert system.drain() == ["pending_audit"]
    record = system.runtime.jobs.require(job.job_id)
    assert record.sign_id is not None
    tracked = system.runtime.store.redis.hgetall(
        system.runtime.store.keys.signature(account, record.sign_id)
    )
    assert (tracked["status"], tracked["job_id"]) == ("0", job.job_id)
    assert kinds(system, account) == ["job.accepted", "signature.submitted"]
    submitted = system.events(account)[-1]
    assert (submitted["sign_id"], submitted["job_id"], submitted["sign"]) == (
        record.sign_id,
        job.job_id,
        "极光推送",
    )


def test_a_resolved_audit_hands_the_gate_on(system: System) -> None:
    """A reported result finishes the job once (compare-and-set) and sends the next job."""
    account = system.tenant()
    first = system.runtime.jobs.create(account, "第一个").job_id
    second = system.runtime.jobs.create(account, "第二个").job_id
    system.drain()
    sign_id = system.runtime.jobs.require(first).sign_id or 0
    system.admin.force(sign_id, status=1)
    assert resolve(system.runtime, first, Status.APPROVED)
    assert not resolve(system.runtime, first, Status.APPROVED)
    assert system.sent == [second]
    assert system.drain() == ["pending_audit"]


def test_permanent_error_fails_the_job_and_frees_the_gate(system: System) -> None:
    """50102 on a modify fails it at once, says why, and hands the gate on."""
    account = system.tenant()
    bad = system.runtime.jobs.modify(account, 987_654_321, "改不了").job_id
    nxt = system.runtime.jobs.create(account, "下一个").job_id
    assert system.drain() == ["failed", "pending_audit"]
    record = system.runtime.jobs.require(bad)
    assert record.error is not None
    assert record.error["code"] == 50102
    assert record.finished_at is not None
    failed = [e for e in system.events(account) if e["type"] == "job.failed"]
    assert failed[0]["error"]["code"] == 50102
    assert system.state(nxt) == "pending_audit"


def test_transient_error_is_rescheduled_then_succeeds(system: System) -> None:
    """A query failing with 50019 beyond the client's attempts is rescheduled, not failed."""
    account = system.tenant()
    system.admin.set_faults(
        [{"kind": "error", "count": 4, "operations": ["query"]}], system.app_key(account)
    )
    job = system.runtime.jobs.query(account, 424_242).job_id
    with pytest.raises(RetryLater) as caught:
        system.drain()
    assert 50 <= caught.value.delay_ms <= 200
    record = system.runtime.jobs.require(job)
    assert (record.state, record.waiting_for) == ("queued", "retry")
    assert record.error is not None
    assert record.error["code"] == 50019
    system.sent.append(job)
    assert system.drain() == ["failed"]  # the emulator now answers: no such signature
    assert system.runtime.jobs.require(job).error["code"] == 50102  # type: ignore[index]


def test_rate_limit_waits_the_servers_retry_after(system: System) -> None:
    """A 429 whose Retry-After outlasts the client's budget reschedules after that wait."""
    account = system.tenant()
    system.admin.set_faults(
        [{"kind": "rate_limit", "seconds": 120, "count": 1}], system.app_key(account)
    )
    system.runtime.jobs.create(account, "限流了")
    with pytest.raises(RetryLater) as caught:
        system.drain()
    assert caught.value.delay_ms == 120_000


def test_transient_errors_past_the_budget_fail_the_job(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """With the retry budget spent, a transient failure fails the job and frees the gate."""
    system = build_system(emulator_server, admin, retry_budget_seconds=0)
    try:
        account = system.tenant()
        system.admin.set_faults(
            [{"kind": "error", "operations": ["query"]}], system.app_key(account)
        )
        job = system.runtime.jobs.query(account, 1).job_id
        with pytest.raises(RetryLater):
            system.drain()
        store = system.runtime.store
        store.redis.hset(store.keys.job(job), mapping={"first_failure_at": 1, "run_at": 0})
        system.sent.append(job)
        assert system.drain() == ["failed"]
        message = system.runtime.jobs.require(job).error["message"]  # type: ignore[index]
        assert message.startswith("gave up after the retry budget")
    finally:
        system.runtime.close()
        delete_prefix(system.settings.redis_url, system.settings.prefix)


def test_auth_failure_pauses_the_account_and_its_jobs_wait(system: System) -> None:
    """50002 pauses the account; its jobs wait, none fails; other accounts go on; resume."""
    account, other = system.tenant(), system.tenant()
    app_key = system.app_key(account)
    system.runtime.accounts.add(account, app_key, "wrong-secret", replace=True)
    first = system.runtime.jobs.create(account, "认证失败").job_id
    second = system.runtime.jobs.query(account, 10_001).job_id
    unaffected = system.runtime.jobs.create(other, "不受影响").job_id
    assert system.drain() == ["paused", "paused", "pending_audit"]
    assert [system.state(j) for j in (first, second)] == ["parked", "parked"]
    assert system.runtime.accounts.require(account).status == "paused"
    assert kinds(system, account).count("account.paused") == 1
    assert system.state(unaffected) == "pending_audit"
    fixed = _emulator_secret(system, app_key)
    system.runtime.accounts.add(account, app_key, fixed, replace=True)
    system.runtime.dispatch.jobs(system.runtime.accounts.resume(account))
    outcomes = system.drain()
    assert sorted(outcomes) == ["failed", "pending_audit"]  # the query's sign id is unknown
    assert system.state(first) == "pending_audit"


def _emulator_secret(system: System, app_key: str) -> str:
    """Give the emulator account a new secret, as an operator fixing credentials would."""
    from tests.conftest import new_credentials  # noqa: PLC0415

    creds = new_credentials()
    system.admin.add_account(app_key, creds.master_secret, audit_delay=3600)
    return creds.master_secret


def probe_now(system: System, account: str) -> None:
    """Let the account's probe come due, as its back-off would (no sleeping)."""
    store = system.runtime.store
    assert store.redis.zadd(store.keys.probes(), {account: 0}, xx=True, ch=True) == 1


def test_external_audit_blocks_the_account_and_is_probed(system: System) -> None:
    """50103 with no uncertainty: blocked, the job stays at the head and is probed until free."""
    account = system.tenant()
    creds = system.credentials(account)
    outside = system.runtime.client.create(creds, SignRequest("外部提交"))
    job = system.runtime.jobs.create(account, "被挡住").job_id
    assert system.drain() == ["blocked"]
    record = system.runtime.jobs.require(job)
    assert (record.state, record.waiting_for) == ("parked", "external_audit")
    keys = system.runtime.store.keys
    assert system.runtime.store.redis.zscore(keys.probes(), account) is not None
    assert system.runtime.store.redis.get(keys.gate(account)) == job
    probe_now(system, account)
    assert system.runtime.reaper.tick().probes == 1
    assert system.drain() == ["blocked"]
    system.admin.force(outside, status=1)
    probe_now(system, account)
    system.runtime.reaper.tick()
    assert system.drain() == ["pending_audit"]
    assert kinds(system, account) == [
        "job.accepted",
        "account.blocked_external",
        "account.resumed",
        "signature.submitted",
    ]
    assert not system.runtime.accounts.require(account).blocked


def test_uncertain_create_that_took_no_effect_is_retried_once(system: System) -> None:
    """A 50019 before the effect: one immediate retry through the gate succeeds, no duplicate."""
    account = system.tenant()
    system.admin.set_faults(
        [{"kind": "error", "count": 1, "operations": ["create"]}], system.app_key(account)
    )
    system.runtime.jobs.create(account, "没生效")
    assert system.drain() == ["pending_audit"]
    stats = system.admin.stats(system.app_key(account))
    assert stats["requests"]["create"] == {"fault_error": 1, "50000": 1}
    assert (stats["signatures"], stats["duplicate_creates"]) == (1, 0)


def test_uncertain_create_that_took_effect_becomes_unconfirmed(system: System) -> None:
    """An after-effect drop: the retry answers 50103, so the create is unconfirmed; it hands the
    gate on at once, and the next job's probe finds the unknown audit pending (blocked)."""
    account = system.tenant()
    system.admin.set_faults([{"kind": "drop", "after": True, "count": 1}], system.app_key(account))
    job = system.runtime.jobs.create(account, "丢回包").job_id
    waiting = system.runtime.jobs.create(account, "排队中").job_id
    assert system.drain() == ["unconfirmed", "blocked"]
    assert system.runtime.store.redis.get(system.runtime.store.keys.gate(account)) == waiting
    record = system.runtime.jobs.require(waiting)
    assert (record.state, record.waiting_for) == ("parked", "external_audit")
    assert system.runtime.accounts.require(account).blocked
    assert kinds(system, account)[-2:] == ["job.unconfirmed", "account.blocked_external"]
    (found,) = system.admin.signatures(system.app_key(account))
    system.runtime.jobs.confirm(job, found)
    confirmed = system.runtime.jobs.require(job)
    assert (confirmed.state, confirmed.sign_id) == ("pending_audit", found)
    assert system.admin.stats(system.app_key(account))["duplicate_creates"] == 0


def test_an_unconfirmed_create_never_holds_its_account(system: System) -> None:
    """Once the unknown audit is over, the account's next job goes through on its probe: the
    tenant's other signatures are not held behind the unconfirmed create."""
    account = system.tenant()
    system.admin.set_faults([{"kind": "drop", "after": True, "count": 1}], system.app_key(account))
    job = system.runtime.jobs.create(account, "未确认").job_id
    waiting = system.runtime.jobs.create(account, "后来的").job_id
    assert system.drain() == ["unconfirmed", "blocked"]
    (found,) = system.admin.signatures(system.app_key(account))
    system.admin.force(found, status=1)
    system.runtime.store.redis.zadd(system.runtime.store.keys.probes(), {account: 0})
    system.runtime.reaper.tick()
    assert system.drain() == ["pending_audit"]
    assert system.state(waiting) == "pending_audit"
    assert system.state(job) == "unconfirmed"
    assert not system.runtime.accounts.require(account).blocked
    # The accepted probe is the proof that ends probe mode, and its record keeps nothing of the
    # wait: the outcome's writes (one HSET, one HDEL) leave no stale field behind.
    store = system.runtime.store
    assert store.redis.hget(store.keys.account(account), "probing") is None
    record = system.runtime.jobs.require(waiting)
    assert (record.waiting_for, record.error, record.attempts) == (None, None, 2)
    # A cleared uncertain flag is written empty (readers take empty as absent); run_at is gone.
    uncertain, run_at = store.redis.hmget(store.keys.job(waiting), "uncertain", "run_at")
    assert not uncertain
    assert run_at is None
    assert store.redis.lrange(store.keys.parked(account), 0, -1) == []


def test_uncertain_modify_that_took_effect_is_pending(system: System) -> None:
    """For a modify the sign id is known: 50103 on the retry means it is pending audit."""
    account = system.tenant()
    system.runtime.jobs.create(account, "原始")
    system.drain()
    (first,) = system.runtime.jobs.find(account=account)
    system.admin.force(first.sign_id or 0, status=2)
    resolve(system.runtime, first.id, Status.REJECTED)
    system.admin.set_faults([{"kind": "error", "after": True, "count": 1}], system.app_key(account))
    job = system.runtime.jobs.modify(account, first.sign_id or 0, "修改后").job_id
    assert system.drain() == ["pending_audit"]
    assert system.runtime.jobs.require(job).sign_id == first.sign_id
    assert system.admin.signature(first.sign_id or 0)["sign"] == "修改后"


def test_interrupted_submission_is_uncertain_when_run_again(system: System) -> None:
    """A job found mid-submission (its process died) is retried as uncertain: unconfirmed."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "进程死了").job_id
    system.sent.clear()
    # What a worker killed right after sending would leave: the lease taken, the API called.
    system.runtime.store.start(job, 0, RateLimits(burst=1, account_burst=1))
    system.runtime.client.create(system.credentials(account), SignRequest("进程死了"))
    assert system.state(job) == "submitting"
    assert system.runtime.reaper.tick().expired_leases == 1
    assert system.drain() == ["unconfirmed"]
    assert system.admin.stats(system.app_key(account))["signatures"] == 1


def test_uncertain_create_too_old_to_retry_is_unconfirmed_without_a_request(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """Past the retry window, 50103 proves nothing: no request is sent, the job is unconfirmed."""
    system = build_system(emulator_server, admin, uncertain_retry_window=0)
    try:
        account = system.tenant()
        job = system.runtime.jobs.create(account, "太久了").job_id
        system.sent.clear()
        system.runtime.store.start(job, 0, RateLimits(burst=1, account_burst=1))
        # The interrupted attempt began long ago (its window of 0 s is long past).
        system.runtime.store.redis.hset(system.runtime.store.keys.job(job), "attempt_at", 1)
        system.runtime.reaper.tick()
        assert system.drain() == ["unconfirmed"]
        assert requests(system.admin, system.app_key(account), "create") == {}
    finally:
        system.runtime.close()
        delete_prefix(system.settings.redis_url, system.settings.prefix)


def test_lost_answers_in_a_row_are_retried_on_a_short_schedule(system: System) -> None:
    """Inside the uncertain window the retries come at once, then 0.25 s, 0.5 s...: the create
    the API never saw is settled by a retry in the same run, not after the ordinary back-off."""
    account = system.tenant()
    system.admin.set_faults([{"kind": "error", "count": 3}], system.app_key(account))
    system.runtime.jobs.create(account, "三次失败")
    assert system.drain() == ["pending_audit"]
    assert system.clock.slept == [0.0, 0.25, 0.5]
    stats = system.admin.stats(system.app_key(account))
    assert stats["requests"]["create"] == {"fault_error": 3, "50000": 1}
    assert (stats["signatures"], stats["duplicate_creates"]) == (1, 0)


def test_no_decisive_answer_within_the_window_is_unconfirmed(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """An API answering 500 to every retry: the create is retried until the window ends, then
    unconfirmed, and the account's next job goes on."""
    system = build_system(emulator_server, admin, uncertain_retry_window=3)
    try:
        account = system.tenant()
        system.admin.set_faults(
            [{"kind": "error", "operations": ["create"]}], system.app_key(account)
        )
        job = system.runtime.jobs.create(account, "一直失败").job_id
        nxt = system.runtime.jobs.modify(account, 1, "修改").job_id
        outcomes = system.drain()
        assert outcomes[0] == "unconfirmed"
        assert system.state(job) == "unconfirmed"
        assert sum(system.clock.slept) <= 3
        assert len(system.clock.slept) >= 5
        assert (
            system.runtime.jobs.require(job)
            .error["message"]
            .endswith(  # type: ignore[index]
                "no decisive answer within the uncertain window"
            )
        )
        assert system.state(nxt) != "parked"
    finally:
        system.runtime.close()
        delete_prefix(system.settings.redis_url, system.settings.prefix)


def test_a_long_retry_after_while_uncertain_is_rescheduled_inside_the_window(
    system: System,
) -> None:
    """A 429 asking for more than a short wait: the uncertain job is rescheduled to then, still
    uncertain, its run owned by the outbox; the next run settles it."""
    account = system.tenant()
    system.admin.set_faults(
        [
            {"kind": "error", "count": 1, "operations": ["create"]},
            {"kind": "rate_limit", "seconds": 5, "count": 4, "operations": ["create"]},
        ],
        system.app_key(account),
    )
    job = system.runtime.jobs.create(account, "限流")
    with pytest.raises(RetryLater) as raised:
        system.drain()
    assert raised.value.delay_ms == 5000
    record = system.runtime.jobs.require(job.job_id)
    assert (record.state, record.uncertain, record.waiting_for) == ("queued", True, "retry")
    store = system.runtime.store
    due = store.redis.zscore(store.keys.outbox(), job.job_id)
    assert due is not None
    assert due >= store.time_ms() + 5000 + system.settings.outbox_grace_seconds * 1000 - 1000


def test_delete_of_a_pending_signature_releases_its_gate(system: System) -> None:
    """Deleting the signature whose audit holds the gate finishes that job and hands on."""
    account = system.tenant()
    holder = system.runtime.jobs.create(account, "要删除").job_id
    nxt = system.runtime.jobs.create(account, "下一个").job_id
    system.drain()
    sign_id = system.runtime.jobs.require(holder).sign_id or 0
    system.runtime.jobs.delete(account, sign_id)
    assert system.drain() == ["deleted", "pending_audit"]
    assert system.state(holder) == "deleted"
    assert system.state(nxt) == "pending_audit"
    assert not system.runtime.store.redis.exists(
        system.runtime.store.keys.signature(account, sign_id)
    )
    assert "signature.deleted" in kinds(system, account)


def test_delete_in_use_fails_with_the_reason(system: System) -> None:
    """50105 on delete fails the job with the API's reason."""
    account = system.tenant()
    sign_id = system.runtime.client.create(system.credentials(account), SignRequest("使用中"))
    system.admin.force(sign_id, status=1, use_status=1)
    job = system.runtime.jobs.delete(account, sign_id).job_id
    assert system.drain() == ["failed"]
    assert system.runtime.jobs.require(job).error["code"] == 50105  # type: ignore[index]


def test_query_job_records_the_answer(system: System) -> None:
    """A query job ends in the signature's audit state with the answer as its result."""
    account = system.tenant()
    sign_id = system.runtime.client.create(system.credentials(account), SignRequest("查询我"))
    system.admin.force(sign_id, status=2)
    job = system.runtime.jobs.query(account, sign_id).job_id
    assert system.drain() == ["rejected"]
    result = system.runtime.jobs.require(job).result
    assert result == {
        "sign_id": sign_id,
        "sign": "查询我",
        "status": 2,
        "use_status": 0,
        "is_default": False,
    }


def test_duplicate_delivery_of_a_finished_job_does_nothing(system: System) -> None:
    """At-least-once delivery: running a settled job again sends nothing to the API."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "只一次").job_id
    system.drain()
    before = system.admin.stats(system.app_key(account))["requests"]
    assert system.runtime.pipeline.run(job) == "settled"
    assert system.admin.stats(system.app_key(account))["requests"] == before


def test_removed_account_fails_its_job(system: System) -> None:
    """A job whose account was removed meanwhile fails with that reason."""
    account = system.tenant()
    job = system.runtime.jobs.query(account, 1).job_id
    system.runtime.store.redis.delete(system.runtime.store.keys.account(account))
    assert system.drain() == ["failed"]
    assert "no longer exists" in system.runtime.jobs.require(job).error["message"]  # type: ignore[index]


def test_rate_limits_reschedule_instead_of_sleeping(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """Past the per-account bucket, a job is rescheduled by the wait it needs; none sleeps."""
    system = build_system(emulator_server, admin, account_rate_limit=1.0, account_rate_burst=1)
    try:
        account = system.tenant()
        system.runtime.jobs.query(account, 1)
        system.runtime.jobs.query(account, 2)
        with pytest.raises(RetryLater) as caught:
            system.drain()
        assert system.clock.slept == []  # the wait is the message's delay, never a sleep
        assert 500 <= caught.value.delay_ms <= 1000
        assert requests(system.admin, system.app_key(account), "query") == {"50102": 1}
    finally:
        system.runtime.close()
        delete_prefix(system.settings.redis_url, system.settings.prefix)


def test_in_probe_mode_a_job_submits_only_to_an_api_that_answers(system: System) -> None:
    """After an unconfirmed create, the next job first asks the API something harmless: while
    the API gives no real answer it waits, certain, with no create sent."""
    account = system.tenant()
    system.admin.set_faults([{"kind": "drop", "after": True, "count": 1}], system.app_key(account))
    first = system.runtime.jobs.create(account, "未知的").job_id
    waiting = system.runtime.jobs.create(account, "等着的").job_id
    assert system.runtime.pipeline.run(first) == "unconfirmed"
    creates_before = requests(system.admin, system.app_key(account), "create")
    system.admin.set_faults([{"kind": "error", "count": 8}], system.app_key(account))
    with pytest.raises(RetryLater):
        system.runtime.pipeline.run(waiting)
    assert requests(system.admin, system.app_key(account), "create") == creates_before
    record = system.runtime.jobs.require(waiting)
    assert (record.state, record.uncertain) == ("queued", False)
    system.admin.set_faults([], system.app_key(account))
    store = system.runtime.store
    store.redis.hset(store.keys.job(waiting), "run_at", 0)
    assert system.runtime.pipeline.run(waiting) == "blocked"
