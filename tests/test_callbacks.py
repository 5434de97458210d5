"""The callback receiver over real HTTP: verification, replay protection, the status path."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers import requests
from tests.system import System
from worker.callbacks import build_app
from worker.emulator.server import ThreadedServer
from worker.jsms import SignRequest
from worker.jsms.callback import callback_signature
from worker.settings import RateLimits
from worker.testing import wait_for


@pytest.fixture
def receiver(system: System) -> Iterator[ThreadedServer]:
    """The receiver served on loopback."""
    with ThreadedServer(build_app(system.runtime)) as server:
        yield server


def push(
    system: System,
    account: str,
    data: dict[str, object],
    *,
    nonce: str = "1",
    timestamp: int | None = None,
    type_: str = "SMS_SIGN",
    secret: str | None = None,
) -> dict[str, str]:
    """A push as the API owner sends it for this account."""
    creds = system.credentials(account)
    if secret is not None:
        from worker.jsms import Credentials  # noqa: PLC0415

        creds = Credentials(creds.app_key, secret)
    stamp = str(timestamp if timestamp is not None else int(time.time() * 1000))
    return {
        "nonce": nonce,
        "timestamp": stamp,
        "type": type_,
        "data": json.dumps(data),
        "signature": callback_signature(creds, nonce, stamp),
    }


def submitted(system: System, account: str, sign: str) -> tuple[str, int]:
    """A create run to pending audit: its job id and sign id."""
    job = system.runtime.jobs.create(account, sign).job_id
    system.drain()
    return job, system.runtime.jobs.require(job).sign_id or 0


def test_get_echoes_echostr(receiver: ThreadedServer, system: System) -> None:
    """The URL check answers the echostr as is."""
    response = httpx.get(f"{receiver.url}/callbacks/any", params={"echostr": "a1b2c3d4"})
    assert (response.status_code, response.text) == (200, "a1b2c3d4")


def test_a_verified_rejection_is_applied_with_its_reason(
    receiver: ThreadedServer, system: System
) -> None:
    """A good SMS_SIGN push resolves the job, releases the gate and puts the reason in the event."""
    account = system.tenant()
    job, sign_id = submitted(system, account, "要拒绝")
    form = push(system, account, {"signId": sign_id, "status": 2, "refuseReason": "资质不全"})
    response = httpx.post(f"{receiver.url}/callbacks/{account}", data=form)
    assert response.json() == {"result": "changed"}
    assert system.state(job) == "rejected"
    (event,) = [e for e in system.events(account) if e["type"] == "signature.rejected"]
    assert (event["reason"], event["job_id"], event["sign_id"]) == ("资质不全", job, sign_id)


@pytest.mark.parametrize(
    ("change", "status", "result"),
    [
        ({"secret": "not-the-secret"}, 401, "bad_signature"),
        ({"timestamp": 1_000_000_000_000}, 400, "stale"),
    ],
)
def test_forged_and_stale_pushes_change_nothing(
    receiver: ThreadedServer, system: System, change: dict[str, object], status: int, result: str
) -> None:
    """A push signed with other credentials, or too old, is refused and changes nothing."""
    account = system.tenant()
    job, sign_id = submitted(system, account, "不改变")
    form = push(system, account, {"signId": sign_id, "status": 1}, **change)  # type: ignore[arg-type]
    response = httpx.post(f"{receiver.url}/callbacks/{account}", data=form)
    assert (response.status_code, response.json()["result"]) == (status, result)
    assert system.state(job) == "pending_audit"


def test_a_replayed_nonce_is_refused(receiver: ThreadedServer, system: System) -> None:
    """The same push twice: the second is refused as a replay."""
    account = system.tenant()
    _, sign_id = submitted(system, account, "重放")
    form = push(system, account, {"signId": sign_id, "status": 1}, nonce="777")
    assert httpx.post(f"{receiver.url}/callbacks/{account}", data=form).status_code == 200
    again = httpx.post(f"{receiver.url}/callbacks/{account}", data=form)
    assert (again.status_code, again.json()["result"]) == (409, "replayed")


def test_other_push_types_are_acknowledged_and_ignored(
    receiver: ThreadedServer, system: System
) -> None:
    """SMS_REPORT and the like answer 200 so the API owner does not retry them."""
    account = system.tenant()
    form = push(system, account, {"msgId": "1"}, type_="SMS_REPORT")
    response = httpx.post(f"{receiver.url}/callbacks/{account}", data=form)
    assert (response.status_code, response.json()["result"]) == (200, "ignored")


def test_unknown_account_and_malformed_pushes(receiver: ThreadedServer, system: System) -> None:
    """An account signq does not know answers as a forgery does (no telling which tenants
    exist); a push missing fields is 400."""
    unknown = httpx.post(f"{receiver.url}/callbacks/nobody", data=push(system, system.tenant(), {}))
    account = system.tenant()
    forged = httpx.post(
        f"{receiver.url}/callbacks/{account}", data=push(system, account, {}, secret="wrong")
    )
    assert (unknown.status_code, unknown.json()) == (forged.status_code, forged.json())
    assert unknown.status_code == 401
    response = httpx.post(f"{receiver.url}/callbacks/{account}", data={"nonce": "1"})
    assert (response.status_code, response.json()["result"]) == (400, "malformed")


def test_a_callback_adopts_an_unconfirmed_create(receiver: ThreadedServer, system: System) -> None:
    """A result for an unknown sign id on an account with an unconfirmed create settles it."""
    account = system.tenant()
    system.admin.set_faults([{"kind": "drop", "after": True, "count": 1}], system.app_key(account))
    job = system.runtime.jobs.create(account, "丢了").job_id
    assert system.drain() == ["unconfirmed"]
    (sign_id,) = system.admin.signatures(system.app_key(account))
    form = push(system, account, {"signId": sign_id, "status": 1})
    response = httpx.post(f"{receiver.url}/callbacks/{account}", data=form)
    assert response.json() == {"result": "adopted"}
    record = system.runtime.jobs.require(job)
    assert (record.state, record.sign_id, record.raw.get("confirmed_by")) == (
        "approved",
        sign_id,
        "callback",
    )


def test_the_emulator_pushes_and_the_change_arrives_without_polling(
    receiver: ThreadedServer, system: System
) -> None:
    """End to end: the emulator's audit clock resolves, pushes SMS_SIGN to the receiver, and the
    event is in the stream with no poll involved (nothing here polls: only the push can)."""
    account = system.tenant()
    app_key = system.app_key(account)
    creds = system.credentials(account)
    system.admin.add_account(
        app_key,
        creds.master_secret,
        audit_delay=0.3,
        callback_url=f"{receiver.url}/callbacks/{account}",
    )
    job = system.runtime.jobs.create(account, "推送REJ").job_id
    system.drain()
    wait_for(lambda: system.state(job) == "rejected", timeout=10, what="the pushed rejection")
    assert requests(system.admin, app_key, "query") == {}
    (event,) = [e for e in system.events(account) if e["type"] == "signature.rejected"]
    assert event["reason"]


def test_the_receiver_facing_the_internet_serves_no_metrics(
    receiver: ThreadedServer, system: System
) -> None:
    """/metrics is not on the public port (`signq callbacks` serves it on the metrics port);
    the results are still counted."""
    from worker.metrics import metrics  # noqa: PLC0415

    before = metrics().callbacks.labels("malformed")._value.get()
    account = system.tenant()
    httpx.post(f"{receiver.url}/callbacks/{account}", data={"nonce": "1"})
    assert httpx.get(f"{receiver.url}/metrics").status_code == 404
    assert metrics().callbacks.labels("malformed")._value.get() == before + 1


def test_oversized_and_overfull_pushes_are_refused_before_parsing(
    receiver: ThreadedServer, system: System
) -> None:
    """Nobody is authenticated before the form is read, so the body and the field count are
    capped: a large body is 413 whether its length is declared or streamed; too many fields
    are refused; the receiver keeps answering."""
    account = system.tenant()
    url = f"{receiver.url}/callbacks/{account}"
    big = {f"f{n}": "x" * 1000 for n in range(100)}
    assert httpx.post(url, data=big).status_code == 413

    def stream() -> Iterator[bytes]:
        for _ in range(200):
            yield b"a=" + b"x" * 1000 + b"&"

    assert httpx.post(url, content=stream()).status_code == 413
    many = "&".join(f"k{n}=v" for n in range(50))
    response = httpx.post(
        url, content=many, headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status_code == 400
    files = {"file": ("a.bin", b"\0" * 100, "application/octet-stream")}
    assert httpx.post(url, files=files).status_code in (400, 413)
    form = push(system, account, {"signId": 1, "status": 1}, nonce="after")
    assert httpx.post(url, data=form).status_code == 200


def test_a_non_ascii_signature_is_a_forgery_not_a_crash(
    receiver: ThreadedServer, system: System
) -> None:
    """A signature field with characters outside ASCII is refused as 401, never a 500."""
    account = system.tenant()
    form = push(system, account, {"signId": 1, "status": 1})
    form["signature"] = "签名" * 20
    response = httpx.post(f"{receiver.url}/callbacks/{account}", data=form)
    assert (response.status_code, response.json()) == (401, {"result": "bad_signature"})


def test_a_result_pushed_before_its_create_is_unconfirmed_is_kept_and_matched(
    receiver: ThreadedServer, system: System
) -> None:
    """A fast audit's push can beat the slow retry that marks its create unconfirmed: the
    result is kept for the account, and settles the create (matched by its sign) as soon as it
    is unconfirmed, reason included."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "先到的").job_id
    other = system.runtime.jobs.create(account, "别的").job_id
    system.sent.clear()
    system.runtime.store.start(job, 0, RateLimits(burst=1, account_burst=1))
    sign_id = system.runtime.client.create(system.credentials(account), SignRequest("先到的"))
    form = push(system, account, {"signId": sign_id, "status": 2, "refuseReason": "不清晰"})
    response = httpx.post(f"{receiver.url}/callbacks/{account}", data=form)
    assert response.json() == {"result": "kept"}
    system.runtime.reaper.tick()
    outcomes = system.drain()
    assert outcomes[0] == "unconfirmed"
    record = system.runtime.jobs.require(job)
    assert (record.state, record.sign_id, record.raw.get("refuse_reason")) == (
        "rejected",
        sign_id,
        "不清晰",
    )
    assert system.state(other) != "parked" or outcomes[1:] == ["blocked"]
    rejected = [e for e in system.events(account) if e["type"] == "signature.rejected"]
    assert [(e["job_id"], e["reason"]) for e in rejected] == [(job, "不清晰")]
    assert not system.runtime.store.redis.exists(system.runtime.store.keys.orphans(account))


def test_a_kept_result_never_settles_a_create_with_another_sign(
    receiver: ThreadedServer, system: System
) -> None:
    """A push for a signature made outside signq is kept, not taken for an unconfirmed create
    whose sign differs."""
    account = system.tenant()
    system.admin.set_faults([{"kind": "drop", "after": True, "count": 1}], system.app_key(account))
    job = system.runtime.jobs.create(account, "我们的").job_id
    assert system.drain() == ["unconfirmed"]
    (ours,) = system.admin.signatures(system.app_key(account))
    system.admin.force(ours, status=1)
    outside = system.runtime.client.create(system.credentials(account), SignRequest("外面的"))
    form = push(system, account, {"signId": outside, "status": 1})
    response = httpx.post(f"{receiver.url}/callbacks/{account}", data=form)
    assert response.json() == {"result": "kept"}
    assert system.state(job) == "unconfirmed"


def test_a_kept_result_the_api_could_not_match_is_matched_by_the_reaper(
    receiver: ThreadedServer, system: System
) -> None:
    """When the query that tells a pushed sign id's sign fails, the result is kept, and the
    reaper's next full pass matches it to the unconfirmed create."""
    account = system.tenant()
    system.admin.set_faults([{"kind": "drop", "after": True, "count": 1}], system.app_key(account))
    job = system.runtime.jobs.create(account, "稍后匹配").job_id
    assert system.drain() == ["unconfirmed"]
    (sign_id,) = system.admin.signatures(system.app_key(account))
    system.admin.set_faults([{"kind": "error", "count": 8, "operations": ["query"]}])
    form = push(system, account, {"signId": sign_id, "status": 1})
    response = httpx.post(f"{receiver.url}/callbacks/{account}", data=form)
    assert response.json() == {"result": "kept"}
    assert system.state(job) == "unconfirmed"
    system.admin.set_faults([])
    system.runtime.reaper.tick(full=True)
    record = system.runtime.jobs.require(job)
    assert (record.state, record.sign_id) == ("approved", sign_id)
    store = system.runtime.store
    assert not store.redis.sismember(store.keys.orphaned(), account)


def test_a_push_the_receiver_cannot_verify_for_want_of_its_key_is_503(
    receiver: ThreadedServer, system: System
) -> None:
    """When the receiver's SIGNQ_SECRET_KEY cannot open the account's secret, the fault is
    ours: 503, so the API pushes again later, and the tenant is not called a forger."""
    from cryptography.fernet import Fernet  # noqa: PLC0415

    from worker.accounts import Accounts, SecretBox  # noqa: PLC0415

    account = system.tenant()
    form = push(system, account, {"signId": 1, "status": 1})
    creds = system.credentials(account)
    sealed = Accounts(system.runtime.store, SecretBox(Fernet.generate_key().decode()))
    sealed.add(account, creds.app_key, creds.master_secret, replace=True)
    response = httpx.post(f"{receiver.url}/callbacks/{account}", data=form)
    assert (response.status_code, response.json()) == (503, {"result": "unavailable"})
    assert system.runtime.accounts.require(account).status == "active"
