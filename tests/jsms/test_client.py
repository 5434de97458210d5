"""The JSMS client against the emulator over real HTTP on loopback."""

from __future__ import annotations

import pytest

from tests.helpers import jpeg, png, requests
from worker.emulator import EmulatorAdmin
from worker.emulator.server import free_port
from worker.jsms import Credentials, JsmsClient, SignRequest, Status, Timeouts
from worker.jsms.errors import (
    AuditPending,
    AuthError,
    InvalidSignId,
    OutcomeUnknown,
    RateLimited,
    ServerError,
    SignatureInUse,
    TransportError,
    UnexpectedResponse,
)


def test_create_query_approve(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """A created signature is pending, then reports the audit result."""
    sign_id = client.create(account, SignRequest("极光推送"))
    pending = client.query(account, sign_id)
    assert (pending.sign_id, pending.sign, pending.status) == (sign_id, "极光推送", Status.PENDING)
    admin.force(sign_id, status=1)
    approved = client.query(account, sign_id)
    assert approved.status is Status.APPROVED
    assert approved.use_status == 0
    assert approved.is_default is True


def test_create_sends_images_type_and_remark_as_multipart(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """Images go as files image0..imageN; type and remark as form fields."""
    request = SignRequest("Acme2024", images=(png(), jpeg()), type=3, remark="营业执照")
    sign_id = client.create(account, request)
    seen = admin.signature(sign_id)
    assert (seen["images"], seen["type"], seen["remark"]) == (2, 3, "营业执照")


def test_modify_a_rejected_signature_sends_it_back_to_audit(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """Modify works on a rejected signature and makes it pending again with the new content."""
    sign_id = client.create(account, SignRequest("旧签名"))
    admin.force(sign_id, status=2, reason="资质不符")
    assert client.modify(account, sign_id, SignRequest("新签名")) == sign_id
    again = client.query(account, sign_id)
    assert (again.sign, again.status) == ("新签名", Status.PENDING)


def test_modify_an_approved_signature_is_refused(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """Only a signature that failed audit may be modified."""
    sign_id = client.create(account, SignRequest("已通过"))
    admin.force(sign_id, status=1)
    with pytest.raises(InvalidSignId) as caught:
        client.modify(account, sign_id, SignRequest("再改"))
    assert caught.value.code == 50102
    assert not caught.value.retryable


def test_second_submission_while_pending_is_audit_pending(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """50103 while another signature of the account is pending; it is the gate's business."""
    client.create(account, SignRequest("第一个"))
    with pytest.raises(AuditPending) as caught:
        client.create(account, SignRequest("第二个"))
    assert (caught.value.code, caught.value.http_status) == (50103, 403)
    assert caught.value.disposition.value == "gate"
    assert requests(admin, account.app_key, "create") == {"50000": 1, "50103": 1}


def test_delete_then_query_is_invalid_sign_id(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """Delete answers 200 with an empty body; the signature is gone afterwards."""
    sign_id = client.create(account, SignRequest("删掉我"))
    admin.force(sign_id, status=2)
    client.delete(account, sign_id)
    with pytest.raises(InvalidSignId):
        client.query(account, sign_id)


def test_delete_in_use_and_default_are_refused(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """50105 for a signature in use, and for the account's default signature."""
    first = client.create(account, SignRequest("默认签名"))
    admin.force(first, status=1)
    second = client.create(account, SignRequest("使用中"))
    admin.force(second, status=1, use_status=1)
    for sign_id in (first, second):
        with pytest.raises(SignatureInUse) as caught:
            client.delete(account, sign_id)
        assert caught.value.code == 50105


def test_another_accounts_signature_is_invalid_sign_id(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """A sign id of another account is indistinguishable from an unknown one."""
    other = Credentials(account.app_key[::-1], "other-secret")
    admin.add_account(other.app_key, other.master_secret)
    foreign = client.create(other, SignRequest("别人的"))
    with pytest.raises(InvalidSignId):
        client.query(account, foreign)


@pytest.mark.parametrize(
    ("options", "creds_change", "code"),
    [
        ({}, "wrong-secret", 50002),
        ({"sms_enabled": False}, None, 50008),
    ],
)
def test_auth_errors(
    client: JsmsClient,
    admin: EmulatorAdmin,
    options: dict[str, object],
    creds_change: str | None,
    code: int,
) -> None:
    """Bad credentials and a disabled SMS service are auth errors, never retried."""
    creds = Credentials("auth" + str(code) + "x" * 12, "right-secret")
    admin.add_account(creds.app_key, creds.master_secret, **options)
    used = Credentials(creds.app_key, creds_change) if creds_change else creds
    with pytest.raises(AuthError) as caught:
        client.query(used, 10_001)
    assert caught.value.code == code
    assert caught.value.disposition.value == "auth"
    assert sum(requests(admin, creds.app_key, "query").values()) == 1


def test_query_retries_transient_errors(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin, sleeps: list[float]
) -> None:
    """Query repeats 50019, proxy 502 pages and dropped connections, then succeeds."""
    sign_id = client.create(account, SignRequest("重试查询"))
    admin.set_faults(
        [
            {"kind": "error", "count": 1, "operations": ["query"]},
            {"kind": "html", "count": 1, "operations": ["query"]},
            {"kind": "drop", "count": 1, "operations": ["query"]},
        ],
        account.app_key,
    )
    assert client.query(account, sign_id).sign_id == sign_id
    seen = requests(admin, account.app_key, "query")
    assert seen == {"fault_error": 1, "http502": 1, "fault_drop": 1, "50000": 1}
    assert len(sleeps) == 3


def test_query_gives_up_after_max_attempts(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """A persistent 50019 is raised after the policy's attempts, as a transient error."""
    admin.set_faults([{"kind": "error", "operations": ["query"]}], account.app_key)
    with pytest.raises(ServerError) as caught:
        client.query(account, 10_001)
    assert caught.value.retryable
    assert requests(admin, account.app_key, "query") == {"fault_error": client.retry.max_attempts}


def test_rate_limit_is_retried_after_retry_after(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin, sleeps: list[float]
) -> None:
    """429 is safe to repeat even for create; the wait is the server's Retry-After."""
    admin.set_faults([{"kind": "rate_limit", "seconds": 2, "count": 2}], account.app_key)
    sign_id = client.create(account, SignRequest("限流"))
    assert sign_id > 0
    assert sleeps == [2.0, 2.0]
    assert requests(admin, account.app_key, "create") == {"http429": 2, "50000": 1}


def test_retry_after_beyond_the_retry_budget_is_not_slept_on(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin, sleeps: list[float]
) -> None:
    """A Retry-After longer than the client's budget is handed up at once, for rescheduling."""
    admin.set_faults([{"kind": "rate_limit", "seconds": 600, "count": 1}], account.app_key)
    with pytest.raises(RateLimited) as caught:
        client.query(account, 10_001)
    assert caught.value.retry_after == 600.0
    assert sleeps == []


def test_rate_limit_exhausted_is_rate_limited(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """When 429s outlast the attempts, the caller gets RateLimited with the wait."""
    admin.set_faults([{"kind": "rate_limit", "seconds": 1}], account.app_key)
    with pytest.raises(RateLimited) as caught:
        client.create(account, SignRequest("一直限流"))
    assert caught.value.retry_after == 1.0


@pytest.mark.parametrize(
    ("fault", "cause"),
    [
        ({"kind": "error", "after": True}, ServerError),
        ({"kind": "drop", "after": True}, TransportError),
        ({"kind": "error", "after": False}, ServerError),
        ({"kind": "html"}, UnexpectedResponse),
    ],
)
def test_create_is_never_repeated_once_sent(
    client: JsmsClient,
    account: Credentials,
    admin: EmulatorAdmin,
    fault: dict[str, object],
    cause: type[Exception],
) -> None:
    """Any failure after a create was sent is OutcomeUnknown, with exactly one request made."""
    admin.set_faults([{**fault, "count": 1, "operations": ["create"]}], account.app_key)
    with pytest.raises(OutcomeUnknown) as caught:
        client.create(account, SignRequest("不确定"))
    assert isinstance(caught.value.cause, cause)
    assert caught.value.operation == "create"
    assert sum(requests(admin, account.app_key, "create").values()) == 1


def test_lost_create_that_took_effect_answers_50103_on_retry(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """After an after-effect drop, the signature exists and a retry is refused with 50103."""
    admin.set_faults([{"kind": "drop", "after": True, "count": 1}], account.app_key)
    with pytest.raises(OutcomeUnknown):
        client.create(account, SignRequest("丢了回包"))
    with pytest.raises(AuditPending):
        client.create(account, SignRequest("丢了回包"))
    assert admin.stats(account.app_key)["signatures"] >= 1


def test_lost_create_that_did_not_take_effect_succeeds_on_retry(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """After a before-effect 50019, the retry creates the signature: no duplicate exists."""
    admin.set_faults([{"kind": "error", "count": 1}], account.app_key)
    with pytest.raises(OutcomeUnknown):
        client.create(account, SignRequest("没生效"))
    assert client.create(account, SignRequest("没生效")) > 0
    assert admin.stats(account.app_key)["duplicate_creates"] == 0


def test_slow_answer_past_the_read_timeout_is_outcome_unknown(
    emulator_server: object, account: Credentials, admin: EmulatorAdmin
) -> None:
    """A create whose answer outlasts the read timeout took effect, and the client says so."""
    admin.set_faults([{"kind": "slow", "seconds": 1.0, "count": 1}], account.app_key)
    api_url = emulator_server.api_url  # type: ignore[attr-defined]
    with (
        JsmsClient(api_url, timeouts=Timeouts(connect=1.0, read=0.2)) as jsms,
        pytest.raises(OutcomeUnknown) as caught,
    ):
        jsms.create(account, SignRequest("慢回包"))
    assert isinstance(caught.value.cause, TransportError)
    assert "ReadTimeout" in str(caught.value)


def test_modify_is_outcome_unknown_after_a_lost_answer(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """The same rule holds for modify; the retry answers 50103, proving the first took effect."""
    sign_id = client.create(account, SignRequest("要修改"))
    admin.force(sign_id, status=2)
    admin.set_faults([{"kind": "error", "after": True, "count": 1}], account.app_key)
    with pytest.raises(OutcomeUnknown) as caught:
        client.modify(account, sign_id, SignRequest("改好了"))
    assert caught.value.operation == "modify"
    with pytest.raises(AuditPending):
        client.modify(account, sign_id, SignRequest("改好了"))


def test_connect_error_is_retried_even_for_create(sleeps: list[float]) -> None:
    """A connection that was never made is safe to repeat; it ends as a not-sent TransportError."""
    from tests.conftest import FAST_RETRY  # noqa: PLC0415

    url = f"http://127.0.0.1:{free_port()}/v1"
    with (
        JsmsClient(url, retry=FAST_RETRY, sleep=sleeps.append) as jsms,
        pytest.raises(TransportError) as caught,
    ):
        jsms.create(Credentials("k" * 24, "s"), SignRequest("连不上"))
    assert caught.value.sent is False
    assert len(sleeps) == FAST_RETRY.max_attempts - 1


def test_delete_retry_that_finds_it_gone_succeeds(
    client: JsmsClient, account: Credentials, admin: EmulatorAdmin
) -> None:
    """A delete whose answer was lost is retried; 50102 then means the first one worked."""
    sign_id = client.create(account, SignRequest("删除重试"))
    admin.force(sign_id, status=2)
    admin.set_faults([{"kind": "drop", "after": True, "count": 1}], account.app_key)
    client.delete(account, sign_id)
    assert requests(admin, account.app_key, "delete") == {"fault_drop_after": 1, "50102": 1}


def test_delete_of_unknown_id_without_uncertainty_fails(
    client: JsmsClient, account: Credentials
) -> None:
    """Without an uncertain attempt before it, 50102 on delete is an error."""
    with pytest.raises(InvalidSignId):
        client.delete(account, 999_999_999)


def test_observer_sees_each_attempt(
    emulator_server: object, account: Credentials, admin: EmulatorAdmin
) -> None:
    """The observer hook gets every HTTP attempt with its code (for metrics)."""
    from tests.conftest import FAST_RETRY  # noqa: PLC0415

    seen: list[tuple[str, int | None]] = []
    admin.set_faults([{"kind": "error", "count": 1, "operations": ["query"]}], account.app_key)
    api_url = emulator_server.api_url  # type: ignore[attr-defined]
    with (
        JsmsClient(
            api_url,
            retry=FAST_RETRY,
            sleep=lambda _: None,
            observer=lambda op, code, _s: seen.append((op, code)),
        ) as jsms,
        pytest.raises(InvalidSignId),
    ):
        jsms.query(account, 424_242)
    assert seen == [("query", 50019), ("query", 50102)]
