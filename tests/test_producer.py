"""Producing jobs: validation at the edge, images by hash, idempotency, id-only messages."""

from __future__ import annotations

import json
from pathlib import Path

import fakeredis
import pytest

from tests.conftest import delete_prefix
from tests.helpers import PNG, png
from tests.system import System, isolated_settings
from worker.broker import BrokerDispatcher, build_broker
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.errors import JobError
from worker.jsms import Image, ValidationError
from worker.records import JobSpec
from worker.runtime import Runtime
from worker.settings import Settings
from worker.store import Store


def stored_jobs(system: System) -> int:
    """How many job records exist."""
    return len(list(system.runtime.store.redis.scan_iter(match=f"{system.settings.prefix}:job:*")))


@pytest.mark.parametrize(
    ("call", "says"),
    [
        (lambda j, a: j.create(a, "【坏】"), "sign: may hold only"),
        (lambda j, a: j.create(a, "好的", type=9), "type: must be from 1 to 7"),
        (lambda j, a: j.create(a, "好的", images=[Image(b"nope", "x.png")]), "not a PNG or JPEG"),
        (lambda j, a: j.modify(a, 0, "好的"), "sign_id: must be a whole number"),
        (lambda j, a: j.delete(a, "abc"), "sign_id: must be a whole number"),
        (lambda j, a: j.create(a, "好的", key="has space"), "key: must be"),
        (lambda j, a: j.create("nobody", "好的"), "no account named 'nobody'"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_enqueued(
    system: System, call: object, says: str
) -> None:
    """A bad field or unknown account is a clear error; no record, no message."""
    account = system.tenant()
    with pytest.raises((ValidationError, JobError)) as caught:
        call(system.runtime.jobs, account)  # type: ignore[operator]
    assert says in str(caught.value)
    assert stored_jobs(system) == 0
    assert system.sent == []


def test_same_key_gives_the_same_job(system: System) -> None:
    """An idempotency key maps to one job id; a repeat enqueues nothing."""
    account = system.tenant()
    first = system.runtime.jobs.create(account, "幂等", key="tenant-42-sign")
    again = system.runtime.jobs.create(account, "幂等", key="tenant-42-sign")
    assert again.job_id == first.job_id
    assert (first.duplicate, again.duplicate) == (False, True)
    assert system.sent == [first.job_id]
    assert stored_jobs(system) == 1


def test_identical_create_while_outstanding_returns_the_earlier_job(system: System) -> None:
    """Without a key, the same create (content and images) returns the job in flight."""
    account = system.tenant()
    first = system.runtime.jobs.create(account, "同内容", images=[png()], remark="r")
    again = system.runtime.jobs.create(account, "同内容", images=[png()], remark="r")
    other = system.runtime.jobs.create(account, "同内容", images=[png()], remark="different")
    assert again.job_id == first.job_id
    assert other.job_id != first.job_id


def test_identical_create_after_the_first_finished_is_a_new_job(system: System) -> None:
    """Content dedupe only holds while the earlier job is not terminal."""
    account = system.tenant()
    first = system.runtime.jobs.create(account, "再来一次")
    system.runtime.jobs.cancel(first.job_id)
    assert system.runtime.jobs.create(account, "再来一次").job_id != first.job_id


def test_images_are_stored_once_by_content_hash(system: System) -> None:
    """Two jobs with the same image share one stored copy, with a TTL."""
    account, other = system.tenant(), system.tenant()
    system.runtime.jobs.create(account, "图一", images=[png("a")])
    system.runtime.jobs.create(other, "图二", images=[png("b")])
    keys = list(system.runtime.store.redis.scan_iter(match=f"{system.settings.prefix}:image:*"))
    assert len(keys) == 1
    assert system.runtime.store.raw.get(keys[0]) == PNG
    assert system.runtime.store.redis.ttl(keys[0]) > 86_400 * 30


def test_record_holds_the_request_and_no_secret(system: System) -> None:
    """The job record has the fields, state and timestamps, and never the secret."""
    account = system.tenant()
    secret = system.credentials(account).master_secret
    job = system.runtime.jobs.create(
        account, "记录", type=2, remark="营业执照", images=[png("lic")]
    )
    record = system.runtime.jobs.require(job.job_id)
    assert (record.op, record.state, record.sign, record.type, record.remark) == (
        "create",
        "queued",
        "记录",
        2,
        "营业执照",
    )
    assert [name for _, name in record.images] == ["lic"]
    assert record.created_at > 0
    assert secret not in json.dumps(record.raw)


def test_submit_many_keeps_going_past_bad_rows(system: System) -> None:
    """A bad spec gets its error; the good ones are accepted in the same pipelined call."""
    account = system.tenant()
    results = system.runtime.jobs.submit_many(
        [
            JobSpec("create", account, request=_req("好一")),
            JobSpec("create", account, request=_req("【坏】")),
            JobSpec("query", account, sign_id=10_001),
        ]
    )
    assert [type(r).__name__ for r in results] == ["Submitted", "ValidationError", "Submitted"]


def _req(sign: str) -> object:
    from worker.jsms import SignRequest  # noqa: PLC0415

    return SignRequest(sign)


def test_the_message_carries_only_the_job_id_and_its_account(
    emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """The Dramatiq message in Redis holds the job id and its account (so the run declares
    the account's keys at once), and no secret."""
    settings = isolated_settings(emulator_server)
    broker = build_broker(settings)
    runtime = Runtime.build(settings, broker=broker)
    try:
        runtime.accounts.add("acme", "7d431e42dfa6a6d693ac2d04", "the-master-secret-1")
        job = runtime.jobs.create("acme", "消息")
        assert isinstance(runtime.dispatch, BrokerDispatcher)
        namespace = runtime.store.keys.dramatiq_namespace()
        messages = runtime.store.redis.hvals(f"{namespace}:{settings.queue}.msgs")
        (message,) = [json.loads(m) for m in messages]
        assert message["args"] == [job.job_id, "acme"]
        assert message["kwargs"] == {}
        assert "the-master-secret-1" not in json.dumps(message)
        # The outbox keeps the job until its run starts, due again at the redelivery deadline.
        due = runtime.store.redis.zscore(runtime.store.keys.outbox(), job.job_id)
        redeliver = settings.redeliver_seconds * 1000
        assert due is not None
        assert (
            runtime.store.time_ms() + redeliver - 5000 < due <= runtime.store.time_ms() + redeliver
        )
    finally:
        broker.close()
        runtime.close()
        delete_prefix(settings.redis_url, settings.prefix)


@pytest.mark.parametrize(
    "bad", ["99999999999999999999", "0", "-5", "1e5", "١٢٣", "12_34", "", True, 3.0, 2**63]
)
def test_a_sign_id_the_api_cannot_return_is_refused_at_the_edge(
    system: System, bad: object
) -> None:
    """Ids beyond a 64-bit integer, non-ASCII digits or non-integers are refused by name, and
    nothing is stored."""
    account = system.tenant()
    with pytest.raises(ValidationError, match="sign_id"):
        system.runtime.jobs.query(account, bad)  # type: ignore[arg-type]
    assert system.runtime.jobs.find(account=account) == []


def test_a_long_sign_id_survives_redis_and_its_events_exactly(system: System) -> None:
    """A 19-digit sign id goes through the scripts as text: the job record, the tracked
    signature and the events keep every digit (a Lua number would make it 1e+18)."""
    account = system.tenant()
    long_id = 2**63 - 1
    job = system.runtime.jobs.query(account, long_id).job_id
    assert system.runtime.jobs.require(job).sign_id == long_id
    accepted = [e for e in system.events(account) if e["type"] == "job.accepted"]
    assert accepted[0]["sign_id"] == long_id
    record = system.runtime.jobs.require(job)
    from worker.records import submitted_change  # noqa: PLC0415
    from worker.settings import PollPolicy  # noqa: PLC0415

    store = system.runtime.store
    store.redis.hset(store.keys.job(job), "state", "submitting")
    store.apply(submitted_change(record, long_id, PollPolicy(first_ms=1000)))
    assert system.runtime.tracker.get(account, long_id) is not None
    assert store.redis.zscore(store.keys.due(), f"{account}:{long_id}") is not None
    assert system.runtime.tracker.observe_result(account, long_id, 1) == "changed"
    approved = [e for e in system.events(account) if e["type"] == "signature.approved"]
    assert approved[0]["sign_id"] == long_id
    assert approved[0]["previous_status"] == 0
    assert system.runtime.jobs.require(job).state == "approved"


def test_images_may_be_bytes_or_paths(system: System, tmp_path: Path) -> None:
    """The Python producer takes an Image, bytes or a file path for each image."""
    account = system.tenant()
    path = tmp_path / "licence.png"
    path.write_bytes(PNG)
    job = system.runtime.jobs.create(account, "三种图", images=[png("a"), PNG, path, str(path)])
    record = system.runtime.jobs.require(job.job_id)
    assert [name for _, name in record.images] == ["a", "image1", "licence", "licence"]


@pytest.mark.parametrize(
    ("images", "says"),
    [
        ([42], "images: item 0 must be an Image, bytes or a file path, got int"),
        ([b"\x89PNG", "/nonexistent/x.png"], "images: /nonexistent/x.png: No such file"),
        (b"\x89PNG", "images: must be a list of images"),
    ],
)
def test_bad_images_are_a_validation_error_naming_the_field(
    system: System, images: object, says: str
) -> None:
    """Anything else is refused by name, and nothing is stored."""
    account = system.tenant()
    with pytest.raises(ValidationError, match=says):
        system.runtime.jobs.create(account, "坏图", images=images)  # type: ignore[arg-type]
    assert system.runtime.jobs.find(account=account) == []


def test_sent_moves_a_large_batch_and_leaves_a_started_job_out() -> None:
    """A bulk submission's `sent` moves every outbox entry of its batch to the redelivery
    deadline, past the 500 members one ZADD takes; an entry gone meanwhile (its run started)
    is not put back. The same for renewed leases."""
    store = Store(Settings(prefix="t"), client=fakeredis.FakeRedis(decode_responses=True))
    ids = [f"j{i}" for i in range(1203)]
    store.redis.zadd(store.keys.outbox(), {i: 1 for i in ids[:-1]})  # the last one started
    store.sent(600_000, ids)
    scores = dict(store.redis.zrange(store.keys.outbox(), 0, -1, withscores=True))
    assert len(scores) == 1202
    assert min(scores.values()) > store.time_ms() + 590_000
    assert "j1202" not in scores
    store.redis.zadd(store.keys.inflight(), {"a": 1, "b": 1})
    store.renew(4000, ["a", "c"])
    leases = dict(store.redis.zrange(store.keys.inflight(), 0, -1, withscores=True))
    assert leases["b"] == 1
    assert leases["a"] > store.time_ms()
    assert "c" not in leases
