"""Property tests: whatever a person, a file or the network hands signq, the answer is a value
or a clear error naming what is wrong, never an unhandled exception."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.system import System
from worker.accounts import _check
from worker.callbacks import Receiver
from worker.errors import AccountError
from worker.jobs import _check_key
from worker.jsms import Credentials, JsmsClient, RetryPolicy, SignRequest
from worker.jsms.errors import JsmsError, ValidationError
from worker.jsms.models import (
    MAX_SIGN_ID,
    Image,
    Signature,
    validate_images,
    validate_remark,
    validate_sign,
    validate_sign_id,
    validate_type,
)

ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=300),
    st.binary(max_size=50),
    st.lists(st.integers(), max_size=3),
)
JSONABLE = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=30))
FAST = settings(max_examples=200, deadline=None)
FIXTURED = [HealthCheck.function_scoped_fixture]


def outcome(call: Any, *errors: type[Exception]) -> object:
    """The call's value, or the error (of the given kinds) it raised."""
    try:
        return call()
    except errors as exc:
        return exc


def refused_by_name(call: Any, field: str) -> object:
    """The call's value, or the ValidationError it raised, checked to name ``field``."""
    result = outcome(call, ValidationError)
    if isinstance(result, ValidationError):
        assert str(result).startswith(field), str(result)
    return result


@FAST
@given(ANYTHING)
def test_validate_sign_answers_a_sign_or_names_the_field(value: object) -> None:
    """A sign comes back 2-8 allowed characters, or the error names `sign`."""
    result = refused_by_name(lambda: validate_sign(value), "sign")
    if isinstance(result, str):
        assert 2 <= len(result) <= 8
        assert not set(result) & set("【】[]（）()")


@FAST
@given(ANYTHING)
def test_validate_type_and_remark(value: object) -> None:
    """A type is 1-7 or None; a remark at most 100 characters or None; else named errors."""
    kind = refused_by_name(lambda: validate_type(value), "type")
    assert kind is None or isinstance(kind, ValidationError) or 1 <= kind <= 7  # type: ignore[operator]
    remark = refused_by_name(lambda: validate_remark(value), "remark")
    assert remark is None or isinstance(remark, ValidationError | str)
    if isinstance(remark, str):
        assert len(remark) <= 100


@FAST
@given(ANYTHING)
def test_validate_sign_id_is_a_64_bit_positive_integer(value: object) -> None:
    """A sign id comes back in 1..2^63-1, or the error names `sign_id`."""
    result = refused_by_name(lambda: validate_sign_id(value), "sign_id")
    if isinstance(result, int):
        assert 0 < result <= MAX_SIGN_ID


@FAST
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_validate_images(blobs: list[bytes]) -> None:
    """Any bytes as images: accepted PNG/JPEG (at most four) or an error naming `images`."""
    images = tuple(Image(b, f"i{n}") for n, b in enumerate(blobs))
    result = refused_by_name(lambda: validate_images(images, 2 * 1024 * 1024), "image")
    if not isinstance(result, ValidationError):
        assert len(blobs) <= 4


@FAST
@given(name=st.text(max_size=80), app_key=st.text(max_size=40), secret=st.text(max_size=40))
def test_account_fields(name: str, app_key: str, secret: str) -> None:
    """Account names, app keys and secrets: accepted, or one AccountError saying which."""
    result = outcome(lambda: _check(name, app_key, secret), AccountError)
    assert result is None or str(result)


@FAST
@given(st.one_of(st.none(), st.text(max_size=300)))
def test_idempotency_keys(key: str | None) -> None:
    """A key is kept as given (no spaces, at most 200 characters) or refused by name."""
    result = refused_by_name(lambda: _check_key(key), "key")
    if isinstance(result, str) and result:
        assert result == key
        assert not any(c.isspace() for c in result)


BODIES = st.one_of(
    st.binary(max_size=200),
    st.dictionaries(
        st.text(max_size=10),
        ANYTHING.filter(lambda v: not isinstance(v, bytes | float)),
        max_size=5,
    ).map(lambda d: json.dumps(d).encode()),
    st.builds(
        lambda code, sign_id: json.dumps(
            {"error": {"code": code, "message": "m"}, "sign_id": sign_id}
        ).encode(),
        st.one_of(st.integers(), st.text(max_size=5), st.none()),
        st.one_of(st.integers(), st.text(max_size=25), st.none()),
    ),
)


@settings(max_examples=150, deadline=None)
@given(
    status=st.sampled_from([200, 201, 204, 400, 401, 403, 404, 415, 429, 500, 502, 503]),
    content_type=st.sampled_from(
        ["application/json", "text/html", "", "application/json; charset=gbk"]
    ),
    body=BODIES,
    operation=st.sampled_from(["create", "query", "delete"]),
)
def test_the_api_response_parser_answers_a_result_or_a_jsms_error(
    status: int, content_type: str, body: bytes, operation: str
) -> None:
    """Any status, content type and body from the API: a result, or a JsmsError (with its code
    and HTTP status), never another exception."""

    def reply(_request: httpx.Request) -> httpx.Response:
        headers = {"content-type": content_type} if content_type else {}
        return httpx.Response(status, content=body, headers=headers)

    client = JsmsClient(
        "http://api.invalid/v1",
        transport=httpx.MockTransport(reply),
        retry=RetryPolicy(max_attempts=1, max_seconds=0.1, backoff_initial=0.0, backoff_max=0.0),
        sleep=lambda _s: None,
    )
    creds = Credentials("7d431e42dfa6a6d693ac2d04", "secret-0123456789")
    calls = {
        "create": lambda: client.create(creds, SignRequest("极光推送")),
        "query": lambda: client.query(creds, 5),
        "delete": lambda: client.delete(creds, 5),
    }
    try:
        result = outcome(calls[operation], JsmsError)
    finally:
        client.close()
    if isinstance(result, JsmsError):
        assert result.message is not None
    elif operation == "create":
        assert isinstance(result, int)
        assert 0 < result <= MAX_SIGN_ID
    elif operation == "query":
        assert isinstance(result, Signature)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    form=st.dictionaries(
        st.sampled_from(["nonce", "timestamp", "type", "data", "signature", "other"]),
        st.text(max_size=60),
        max_size=6,
    ),
    forge=st.booleans(),
)
def test_the_receiver_answers_any_form_with_a_status(
    system: System, form: dict[str, str], forge: bool
) -> None:
    """Any form, forged or not, stale or fresh: an HTTP status and a result, never an
    exception, and nothing changed for a form that does not verify."""
    account = system.tenant() if forge else "nobody"
    status, body = Receiver(system.runtime).apply(account, form)
    assert status in (200, 400, 401, 409, 503)
    assert isinstance(body.get("result"), str)
    if status != 200:
        assert system.runtime.store.redis.xlen(system.runtime.store.keys.events()) == 0


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=400), kind=st.sampled_from(["urlencoded", "multipart", "none"]))
def test_the_receiver_answers_any_bytes_over_http(
    receiver_url: str, body: bytes, kind: str
) -> None:
    """Any bytes posted (non-UTF-8 included) to a real receiver: 4xx, never a 500."""
    headers = {
        "urlencoded": {"content-type": "application/x-www-form-urlencoded"},
        "multipart": {"content-type": "multipart/form-data; boundary=b"},
        "none": {},
    }[kind]
    response = httpx.post(f"{receiver_url}/callbacks/nobody", content=body, headers=headers)
    assert 400 <= response.status_code < 500


@pytest.fixture
def receiver_url(system: System) -> Any:
    """A receiver served on loopback for the HTTP property test."""
    from worker.callbacks import build_app  # noqa: PLC0415
    from worker.emulator.server import ThreadedServer  # noqa: PLC0415

    with ThreadedServer(build_app(system.runtime)) as server:
        yield server.url
