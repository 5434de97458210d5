"""The API owner's content rules, checked before any request is sent."""

from __future__ import annotations

import httpx
import pytest

from tests.helpers import PNG, jpeg, png
from worker.jsms import Credentials, Image, JsmsClient, SignRequest, ValidationError
from worker.jsms.models import validate_request, validate_sign, validate_sign_id

CREDS = Credentials("b" * 24, "secret")


@pytest.mark.parametrize("sign", ["极光", "极光推送短信服务", "Acme", "ab", "A1b2C3d4", "中文En9"])
def test_valid_signs(sign: str) -> None:
    """2 to 8 Chinese characters, letters or digits pass."""
    assert validate_sign(sign) == sign


@pytest.mark.parametrize(
    ("sign", "says"),
    [
        ("", "is required"),
        ("极", "2 to 8"),
        ("极光推送短信服务好", "2 to 8"),
        ("【极光】", "'【' '】'"),
        ("[Acme]", "'[' ']'"),
        ("（极光）", "'（' '）'"),
        ("Ac me", "' '"),
        ("Acme!", "'!'"),
        ("极光😀", "'😀'"),
        ("ＡＢ", "'Ａ' 'Ｂ'"),
    ],
)
def test_invalid_signs_name_the_problem(sign: str, says: str) -> None:
    """A bad sign is refused with a message naming the field and the offending characters."""
    with pytest.raises(ValidationError) as caught:
        validate_sign(sign)
    assert caught.value.field == "sign"
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("request_", "field", "says"),
    [
        (SignRequest("极光", type=0), "type", "from 1 to 7"),
        (SignRequest("极光", type=8), "type", "from 1 to 7"),
        (SignRequest("极光", type="x"), "type", "whole number"),  # type: ignore[arg-type]
        (SignRequest("极光", remark="r" * 101), "remark", "at most 100"),
        (SignRequest("极光", images=(png(),) * 5), "images", "at most 4"),
        (
            SignRequest("极光", images=(Image(b"GIF89a...", "fake.png"),)),
            "image0 (fake.png)",
            "not a PNG or JPEG",
        ),
        (
            SignRequest("极光", images=(png(), Image(b"", "empty.jpg"))),
            "image1 (empty.jpg)",
            "is empty",
        ),
    ],
)
def test_invalid_fields_are_named(request_: SignRequest, field: str, says: str) -> None:
    """type 1-7, remark up to 100 characters, up to 4 real PNG/JPEG images."""
    with pytest.raises(ValidationError) as caught:
        validate_request(request_)
    assert caught.value.field == field
    assert says in str(caught.value)


def test_valid_request_with_every_field() -> None:
    """Type, a 100-character remark and four images of both kinds pass."""
    request = SignRequest("极光", images=(png(), jpeg(), png(), jpeg()), type=7, remark="r" * 100)
    assert validate_request(request) == request


def test_image_size_limit_is_configurable() -> None:
    """The 2 MB limit is a default; a smaller configured limit is enforced by content length."""
    big = Image(PNG + b"\x00" * 2048, "big")
    assert validate_request(SignRequest("极光", images=(big,))).images == (big,)
    with pytest.raises(ValidationError) as caught:
        validate_request(SignRequest("极光", images=(big,)), max_image_bytes=1024)
    assert "the limit is 1024 bytes" in str(caught.value)


def test_default_limit_is_two_megabytes() -> None:
    """An image one byte over 2 MB is refused by default."""
    over = Image(PNG + b"\x00" * (2 * 1024 * 1024 - len(PNG) + 1), "over")
    with pytest.raises(ValidationError, match="the limit is 2097152 bytes"):
        validate_request(SignRequest("极光", images=(over,)))


@pytest.mark.parametrize("value", [0, -1, "abc", "", True, "1.5"])
def test_bad_sign_ids(value: object) -> None:
    """A sign id is a positive whole number."""
    with pytest.raises(ValidationError) as caught:
        validate_sign_id(value)
    assert caught.value.field == "sign_id"


def test_sign_id_from_text() -> None:
    """A sign id typed on a command line is accepted as text."""
    assert validate_sign_id(" 37582 ") == 37582


def test_nothing_is_sent_for_invalid_input() -> None:
    """Every operation validates before it touches the network."""
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"sign_id": 1})

    with JsmsClient("https://jsms.invalid/v1", transport=httpx.MockTransport(handler)) as jsms:
        for call in (
            lambda: jsms.create(CREDS, SignRequest("【坏】")),
            lambda: jsms.modify(CREDS, 1, SignRequest("极光", type=9)),
            lambda: jsms.modify(CREDS, 0, SignRequest("极光")),
            lambda: jsms.query(CREDS, -5),
            lambda: jsms.delete(CREDS, "x"),  # type: ignore[arg-type]
        ):
            with pytest.raises(ValidationError):
                call()
    assert sent == []
