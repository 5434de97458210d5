"""Typed requests and results of the signature API, and the content rules checked before sending.

The rules are the API owner's published ones; the producer runs the same checks at submit time,
so nothing invalid is ever enqueued.
"""

from __future__ import annotations

import enum
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from worker.jsms.errors import UnexpectedResponse, ValidationError

MAX_IMAGES = 4
DEFAULT_MAX_IMAGE_BYTES = 2 * 1024 * 1024
MAX_REMARK_CHARS = 100
SIGN_TYPES = range(1, 8)
# Chinese (CJK unified ideographs and extension A), ASCII letters and digits: 2 to 8 of them.
_SIGN_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fffA-Za-z0-9]{2,8}")
_SIGN_CHAR_RE = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fffA-Za-z0-9]")


class Status(enum.IntEnum):
    """Audit status of a signature. 0 is undocumented for signatures but used by the API family."""

    PENDING = 0
    APPROVED = 1
    REJECTED = 2


@dataclass(frozen=True)
class Image:
    """One audit image: its bytes and the format found in them (never trusted from a name)."""

    data: bytes = field(repr=False)
    filename: str = "image"

    @cached_property
    def kind(self) -> str | None:
        """``png`` or ``jpeg`` by magic bytes, else ``None``."""
        return image_kind(self.data)

    @property
    def content_type(self) -> str:
        """The MIME type sent in the multipart part."""
        return "image/png" if self.kind == "png" else "image/jpeg"

    @cached_property
    def sha256(self) -> str:
        """Content hash: images are stored once by it and compared by it (computed once)."""
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class SignRequest:
    """The fields of a create or a modify."""

    sign: str
    images: tuple[Image, ...] = ()
    type: int | None = None
    remark: str | None = None


@dataclass(frozen=True)
class Signature:
    """A signature as the query endpoint reports it."""

    sign_id: int
    sign: str
    status: Status
    use_status: int
    is_default: bool | None = None

    @classmethod
    def from_api(cls, body: Mapping[str, Any], *, http_status: int = 200) -> Signature:
        """Parse a query answer; a missing or mistyped field is an UnexpectedResponse."""
        try:
            sign_id = body["sign_id"]
            sign = body["sign"]
            status = Status(body["status"])
            use_status = body.get("use_status", 0)
            is_default = body.get("is_default")
            if not isinstance(sign_id, int) or isinstance(sign_id, bool):
                raise TypeError("sign_id")
            if not 0 < sign_id <= MAX_SIGN_ID:
                raise ValueError("sign_id out of range")
            if not isinstance(sign, str) or not isinstance(use_status, int):
                raise TypeError("sign or use_status")
        except (KeyError, TypeError, ValueError) as exc:
            raise UnexpectedResponse(
                f"query answer lacks a valid field ({exc})",
                http_status=http_status,
                body=repr(dict(body))[:200],
            ) from None
        return cls(
            sign_id=sign_id,
            sign=sign,
            status=status,
            use_status=int(use_status),
            is_default=bool(is_default) if is_default is not None else None,
        )


def image_kind(data: bytes) -> str | None:
    """``png`` or ``jpeg`` when the bytes start like one, else ``None``."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    return None


def validate_sign(sign: object) -> str:
    """The sign text, or a ValidationError saying exactly what is wrong with it."""
    if not isinstance(sign, str) or not sign:
        raise ValidationError("sign", "is required")
    bad = sorted({c for c in sign if not _SIGN_CHAR_RE.fullmatch(c)})
    if bad:
        shown = " ".join(repr(c) for c in bad[:5])
        raise ValidationError(
            "sign", f"may hold only Chinese characters, letters and digits; found {shown}"
        )
    if not _SIGN_RE.fullmatch(sign):
        raise ValidationError("sign", f"must be 2 to 8 characters long, got {len(sign)}")
    return sign


def validate_type(value: object) -> int | None:
    """The signature type 1-7, or None when absent."""
    if value is None or value == "":
        return None
    try:
        number = int(str(value))
    except ValueError:
        raise ValidationError(
            "type", f"must be a whole number from 1 to 7, got {value!r}"
        ) from None
    if number not in SIGN_TYPES:
        raise ValidationError("type", f"must be from 1 to 7, got {number}")
    return number


def validate_remark(value: object) -> str | None:
    """The remark (at most 100 characters), or None when absent."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValidationError("remark", "must be text")
    if len(value) > MAX_REMARK_CHARS:
        raise ValidationError(
            "remark", f"must be at most {MAX_REMARK_CHARS} characters, got {len(value)}"
        )
    return value


def validate_images(
    images: tuple[Image, ...], max_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> tuple[Image, ...]:
    """At most four images, each really PNG or JPEG and at most ``max_bytes``."""
    if len(images) > MAX_IMAGES:
        raise ValidationError("images", f"at most {MAX_IMAGES} images, got {len(images)}")
    for index, image in enumerate(images):
        name = f"image{index} ({image.filename})"
        if not image.data:
            raise ValidationError(name, "is empty")
        if image.kind is None:
            raise ValidationError(name, "is not a PNG or JPEG image (checked by its content)")
        if len(image.data) > max_bytes:
            raise ValidationError(
                name, f"is {len(image.data)} bytes; the limit is {max_bytes} bytes"
            )
    return images


def validate_request(
    request: SignRequest, max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES
) -> SignRequest:
    """Check every field of a create or modify; raises ValidationError naming the first bad one."""
    return SignRequest(
        sign=validate_sign(request.sign),
        images=validate_images(tuple(request.images), max_image_bytes),
        type=validate_type(request.type),
        remark=validate_remark(request.remark),
    )


# Sign ids are JSON integers the API keeps as 64-bit numbers; anything beyond is not one of its.
MAX_SIGN_ID = 2**63 - 1
_SIGN_ID = re.compile(r"[0-9]{1,19}")


def validate_sign_id(value: object) -> int:
    """A sign id: a positive whole number the API can return (a 64-bit integer), written
    with ASCII digits."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValidationError(
            "sign_id", f"must be a whole number from 1 to {MAX_SIGN_ID}, got {value!r}"
        )
    text = str(value).strip()
    if not _SIGN_ID.fullmatch(text) or not 0 < int(text) <= MAX_SIGN_ID:
        raise ValidationError(
            "sign_id", f"must be a whole number from 1 to {MAX_SIGN_ID}, got {value!r}"
        )
    return int(text)
