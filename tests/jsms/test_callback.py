"""Verification of the API owner's SMS_SIGN pushes, and the emulator really sending them."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from worker.emulator import EmulatorAdmin
from worker.emulator.server import ThreadedServer
from worker.jsms import Credentials, JsmsClient, SignRequest, Status
from worker.jsms.callback import (
    BadSignature,
    MalformedCallback,
    StaleCallback,
    callback_signature,
    sign_audit_result,
    verify_callback,
)

CREDS = Credentials("c" * 24, "callback-secret")
NOW_MS = 1_764_000_000_000


def push(
    data: object, *, timestamp: int = NOW_MS, creds: Credentials = CREDS, **over: str
) -> dict[str, str]:
    """A push as the API owner would send it."""
    form = {
        "nonce": "8412390871234",
        "timestamp": str(timestamp),
        "type": "SMS_SIGN",
        "data": json.dumps(data),
    }
    form["signature"] = callback_signature(creds, form["nonce"], form["timestamp"])
    form.update(over)
    return form


def test_signature_is_the_documented_sha1() -> None:
    """SHA-1 of appKey=..&appMasterSecret=..&nonce=..&timestamp=.., hex."""
    text = f"appKey={CREDS.app_key}&appMasterSecret={CREDS.master_secret}&nonce=1&timestamp=2"
    assert callback_signature(CREDS, "1", "2") == hashlib.sha1(text.encode()).hexdigest()


def test_good_push_is_verified_and_parsed() -> None:
    """A correctly signed, fresh push yields its data; SMS_SIGN data becomes a result."""
    form = push({"signId": 37582, "status": 2, "refuseReason": "资质不符"})
    message = verify_callback(form, CREDS, now_ms=NOW_MS + 1000)
    result = sign_audit_result(message)
    assert (result.sign_id, result.status, result.refuse_reason) == (
        37582,
        Status.REJECTED,
        "资质不符",
    )
    assert message.nonce == "8412390871234"


def test_signature_with_other_credentials_is_rejected() -> None:
    """A push signed with another secret is forged, however well-formed."""
    form = push({"signId": 1, "status": 1}, creds=Credentials(CREDS.app_key, "not-it"))
    with pytest.raises(BadSignature):
        verify_callback(form, CREDS, now_ms=NOW_MS)


def test_tampered_data_with_reused_signature_cannot_change_the_nonce() -> None:
    """The signature covers nonce and timestamp: changing either breaks it."""
    form = push({"signId": 1, "status": 1})
    form["nonce"] = "999"
    with pytest.raises(BadSignature):
        verify_callback(form, CREDS, now_ms=NOW_MS)


@pytest.mark.parametrize("skew_s", [-301, 301, 86_400])
def test_stale_or_future_timestamps_are_rejected(skew_s: int) -> None:
    """A push more than five minutes from now (either way) is refused."""
    form = push({"signId": 1, "status": 1}, timestamp=NOW_MS + skew_s * 1000)
    with pytest.raises(StaleCallback):
        verify_callback(form, CREDS, now_ms=NOW_MS)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"signature": ""}, "missing field(s): signature"),
        ({"nonce": ""}, "missing field(s): nonce"),
    ],
)
def test_missing_fields_are_malformed(change: dict[str, str], says: str) -> None:
    """A push without its fields is malformed, and the error names them."""
    with pytest.raises(MalformedCallback, match=says.replace("(", r"\(").replace(")", r"\)")):
        verify_callback(push({}, **change), CREDS, now_ms=NOW_MS)


def test_data_that_is_not_json_is_malformed() -> None:
    """Verified but unreadable data is refused."""
    form = push({})
    form["data"] = "{not json"
    with pytest.raises(MalformedCallback, match="not JSON"):
        verify_callback(form, CREDS, now_ms=NOW_MS)


@pytest.mark.parametrize(
    "data", [{"status": 1}, {"signId": "x", "status": 1}, {"signId": 1, "status": 7}]
)
def test_sign_result_needs_sign_id_and_status(data: dict[str, object]) -> None:
    """SMS_SIGN data without a usable signId or status is malformed."""
    message = verify_callback(push(data), CREDS, now_ms=NOW_MS)
    with pytest.raises(MalformedCallback):
        sign_audit_result(message)


def test_other_push_types_are_not_sign_results() -> None:
    """SMS_REPORT and friends verify, but are not signature results."""
    message = verify_callback(push({}, type="SMS_REPORT"), CREDS, now_ms=NOW_MS)
    with pytest.raises(MalformedCallback, match="not an SMS_SIGN push"):
        sign_audit_result(message)


class Receiver:
    """A callback endpoint that records pushes; it fails the first ``failures`` POSTs."""

    def __init__(self, failures: int = 0) -> None:
        self.forms: list[dict[str, str]] = []
        self.failures = failures
        self.arrived = threading.Event()
        self.app = Starlette(routes=[Route("/cb", self.handle, methods=["GET", "POST"])])

    async def handle(self, request: Request) -> Response:
        if request.method == "GET":
            return PlainTextResponse(request.query_params.get("echostr", ""))
        form = await request.form()
        if self.failures > 0:
            self.failures -= 1
            return PlainTextResponse("busy", status_code=503)
        self.forms.append({k: str(v) for k, v in form.items()})
        self.arrived.set()
        return PlainTextResponse("ok")


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, ThreadedServer]]:
    """A receiver that fails its first push, served on loopback."""
    recv = Receiver(failures=1)
    with ThreadedServer(recv.app) as server:
        yield recv, server


def test_emulator_pushes_verifiable_results_and_retries(
    receiver: tuple[Receiver, ThreadedServer], admin: EmulatorAdmin, client: JsmsClient
) -> None:
    """The URL is checked with echostr; a verifiable result is pushed, retried once on 503."""
    recv, server = receiver
    creds = Credentials("cbpush" + "d" * 18, "push-secret")
    admin.add_account(
        creds.app_key, creds.master_secret, callback_url=server.url + "/cb", audit_delay=3600
    )
    sign_id = client.create(creds, SignRequest("回调测试"))
    admin.force(sign_id, status=2, reason="缺少证明")
    assert recv.arrived.wait(timeout=5)
    message = verify_callback(recv.forms[0], creds)
    result = sign_audit_result(message)
    assert (result.sign_id, result.status, result.refuse_reason) == (
        sign_id,
        Status.REJECTED,
        "缺少证明",
    )
    assert recv.failures == 0


def test_emulator_refuses_a_callback_url_that_does_not_echo(admin: EmulatorAdmin) -> None:
    """Registering a callback URL that does not echo echostr fails, like the API owner's console."""
    app = Starlette(routes=[Route("/cb", lambda _r: PlainTextResponse("nope"))])
    with ThreadedServer(app) as server, pytest.raises(RuntimeError, match="did not echo echostr"):
        admin.add_account("noecho" + "e" * 18, "s", callback_url=server.url + "/cb")


def test_pushes_arrive_quickly(
    receiver: tuple[Receiver, ThreadedServer], admin: EmulatorAdmin, client: JsmsClient
) -> None:
    """With the audit clock alone (no admin forcing), a result is pushed soon after it resolves."""
    recv, server = receiver
    recv.failures = 0
    creds = Credentials("cbclock" + "f" * 17, "clock-secret")
    admin.add_account(
        creds.app_key, creds.master_secret, callback_url=server.url + "/cb", audit_delay=0.1
    )
    started = time.monotonic()
    sign_id = client.create(creds, SignRequest("时钟PASS"))
    assert recv.arrived.wait(timeout=5)
    assert sign_audit_result(verify_callback(recv.forms[0], creds)).sign_id == sign_id
    assert time.monotonic() - started < 5
