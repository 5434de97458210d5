"""How the client reads every answer the API (or something in front of it) may give.

httpx's MockTransport stands in for the server here: these answers are ones the emulator has no
reason to produce (unknown codes, truncated JSON, a 200 without sign_id).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest

from worker.jsms import Credentials, JsmsClient, RetryPolicy, SignRequest
from worker.jsms.errors import (
    CODES,
    ApiError,
    Disposition,
    JsmsError,
    OutcomeUnknown,
    RateLimited,
    UnexpectedResponse,
)

CREDS = Credentials("a" * 24, "top-secret-value")
ONE_TRY = RetryPolicy(max_attempts=1)


def mock_client(
    handler: Callable[[httpx.Request], httpx.Response], retry: RetryPolicy = ONE_TRY
) -> JsmsClient:
    """A client whose every request is answered by ``handler``."""
    return JsmsClient(
        "https://jsms.invalid/v1",
        transport=httpx.MockTransport(handler),
        retry=retry,
        sleep=lambda _: None,
    )


def answer(
    status: int, body: bytes | str = b"", **headers: str
) -> Callable[[httpx.Request], httpx.Response]:
    """A handler that always gives the same answer."""
    content = body.encode() if isinstance(body, str) else body
    return lambda _request: httpx.Response(status, content=content, headers=headers)


PERMANENT = {50003, 50007, 50013, 50016, 50017, 50018, 50025, 50101, 50102, 50104, 50105}


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_seed_code_maps_to_its_error(code: int) -> None:
    """Each return code of the seed's table raises its own class with code, status and message."""
    error_class, status, message = CODES[code]
    body = f'{{"error": {{"code": {code}, "message": "{message}"}}}}'
    with mock_client(answer(status, body)) as jsms, pytest.raises(ApiError) as caught:
        jsms.query(CREDS, 1)
    error = caught.value
    assert type(error) is error_class
    assert (error.code, error.http_status, error.message) == (code, status, message)
    expected = {
        50019: Disposition.TRANSIENT,
        50103: Disposition.GATE,
        50001: Disposition.AUTH,
        50002: Disposition.AUTH,
        50008: Disposition.AUTH,
    }.get(code, Disposition.PERMANENT)
    assert error.disposition is expected
    assert error.retryable is (expected is Disposition.TRANSIENT)
    if code in PERMANENT:
        assert error.disposition is Disposition.PERMANENT


def test_unknown_code_keeps_its_number_and_status() -> None:
    """An unknown 4xx code is a permanent ApiError that says what came back."""
    body = '{"error": {"code": 59999, "message": "brand new"}}'
    with mock_client(answer(403, body)) as jsms, pytest.raises(ApiError) as caught:
        jsms.query(CREDS, 1)
    assert (caught.value.code, caught.value.http_status) == (59999, 403)
    assert "unknown JSMS code" in str(caught.value)
    assert not caught.value.retryable


@pytest.mark.parametrize(
    ("status", "body", "headers", "retryable", "says"),
    [
        (502, "<html>Bad Gateway</html>", {"content-type": "text/html"}, True, "HTTP 502"),
        (503, "", {}, True, "HTTP 503"),
        (200, "", {}, False, "empty body"),
        (200, '{"sign_id": 1, "sign"', {}, False, "not a JSON object"),
        (200, "[1, 2]", {}, False, "not a JSON object"),
        (200, '{"sign_id": 1}', {}, False, "lacks a valid field"),
        (200, '{"sign_id": "x", "sign": "ab", "status": 1}', {}, False, "lacks a valid field"),
        (200, '{"sign_id": 1, "sign": "ab", "status": 9}', {}, False, "lacks a valid field"),
        (404, "Not Found", {"content-type": "text/plain"}, False, "HTTP 404"),
    ],
)
def test_unexpected_query_answers_are_clear_errors(
    status: int, body: str, headers: dict[str, str], retryable: bool, says: str
) -> None:
    """HTML pages, empty or truncated bodies and missing fields never surface as KeyError."""
    with (
        mock_client(answer(status, body, **headers)) as jsms,
        pytest.raises(UnexpectedResponse) as caught,
    ):
        jsms.query(CREDS, 1)
    assert caught.value.retryable is retryable
    assert says in str(caught.value)
    assert caught.value.http_status == status


@pytest.mark.parametrize("body", ['{"sign": "x"}', '{"sign_id": 0}', '{"sign_id": true}', "", "ok"])
def test_create_answer_without_sign_id_is_outcome_unknown(body: str) -> None:
    """A 200 without a usable sign_id may hide a created signature: OutcomeUnknown, no retry."""
    calls: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200, content=body.encode())

    retry = RetryPolicy(max_attempts=3)
    with mock_client(handler, retry) as jsms, pytest.raises(OutcomeUnknown) as caught:
        jsms.create(CREDS, SignRequest("签名"))
    assert isinstance(caught.value.cause, UnexpectedResponse)
    assert len(calls) == 1


def test_sign_id_as_numeric_string_is_accepted() -> None:
    """Some gateways quote numbers; a numeric string sign_id is read as the number."""
    with mock_client(answer(200, '{"sign_id": "37582"}')) as jsms:
        assert jsms.create(CREDS, SignRequest("签名")) == 37582


def test_query_without_is_default_leaves_it_unknown() -> None:
    """Older API versions do not send is_default; the result says None, not False."""
    body = '{"sign_id": 37582, "sign": "极光推送", "status": 1, "use_status": 1}'
    with mock_client(answer(200, body)) as jsms:
        signature = jsms.query(CREDS, 37582)
    assert signature.is_default is None
    assert signature.use_status == 1


def test_retry_after_http_date_is_understood() -> None:
    """Retry-After may be an HTTP date; the wait is the time until then."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    with (
        mock_client(answer(429, "", **{"Retry-After": when})) as jsms,
        pytest.raises(RateLimited) as caught,
    ):
        jsms.query(CREDS, 1)
    assert caught.value.retry_after is not None
    assert 25 <= caught.value.retry_after <= 30


def test_request_shape_matches_the_api() -> None:
    """Basic auth per request, multipart create even without images, no body on GET/DELETE."""
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(200, json={"sign_id": 7})
        if request.method == "GET":
            return httpx.Response(200, json={"sign_id": 7, "sign": "ab", "status": 0})
        return httpx.Response(200)

    with mock_client(handler) as jsms:
        jsms.create(CREDS, SignRequest("签名", type=2, remark="r"))
        jsms.query(CREDS, 7)
        jsms.delete(CREDS, 7)
    create, query, delete = seen
    assert (
        create.headers["authorization"]
        == httpx.BasicAuth(CREDS.app_key, CREDS.master_secret)._auth_header
    )
    assert create.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert b'name="sign"' in create.content
    assert b'name="type"' in create.content
    assert str(create.url) == "https://jsms.invalid/v1/sign"
    assert (query.method, str(query.url)) == ("GET", "https://jsms.invalid/v1/sign/7")
    assert (delete.method, delete.content) == ("DELETE", b"")


def test_errors_never_carry_the_secret() -> None:
    """Neither the message nor the serialized error of a failure holds the master secret."""
    with (
        mock_client(answer(401, '{"error": {"code": 50002, "message": "auth failed"}}')) as jsms,
        pytest.raises(JsmsError) as caught,
    ):
        jsms.query(CREDS, 1)
    assert CREDS.master_secret not in str(caught.value)
    assert CREDS.master_secret not in repr(caught.value.to_dict())
    assert CREDS.master_secret not in repr(CREDS)
