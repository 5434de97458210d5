"""Verification of the API owner's audit-result pushes (``SMS_SIGN`` callbacks).

A push is a form POST with ``nonce``, ``timestamp`` (ms), ``type``, ``data`` (JSON) and
``signature`` = hex SHA-1 of
``appKey={appKey}&appMasterSecret={masterSecret}&nonce={nonce}&timestamp={timestamp}``.
Errors: ``CallbackError`` (``retryable`` is False) with ``BadSignature``, ``StaleCallback`` and
``MalformedCallback`` below it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.jsms.credentials import Credentials
from worker.jsms.errors import JsmsError
from worker.jsms.models import Status

SMS_SIGN = "SMS_SIGN"
DEFAULT_MAX_AGE_SECONDS = 300.0


class CallbackError(JsmsError):
    """A push that must not be acted on; the message says why."""


class MalformedCallback(CallbackError):
    """A field is missing or does not parse."""


class BadSignature(CallbackError):
    """The SHA-1 signature does not match the account's credentials."""


class StaleCallback(CallbackError):
    """The timestamp is too far from now: a replay, or a clock gone wrong."""


@dataclass(frozen=True)
class CallbackMessage:
    """A verified push."""

    type: str
    nonce: str
    timestamp_ms: int
    data: dict[str, Any]


@dataclass(frozen=True)
class SignAuditResult:
    """The ``data`` of an ``SMS_SIGN`` push."""

    sign_id: int
    status: Status
    refuse_reason: str | None


def callback_signature(creds: Credentials, nonce: str, timestamp: str | int) -> str:
    """The hex SHA-1 the API owner signs a push with."""
    text = (
        f"appKey={creds.app_key}&appMasterSecret={creds.master_secret}"
        f"&nonce={nonce}&timestamp={timestamp}"
    )
    return hashlib.sha1(text.encode(), usedforsecurity=False).hexdigest()


def verify_callback(
    form: Mapping[str, str],
    creds: Credentials,
    *,
    now_ms: int | None = None,
    max_age_seconds: float = DEFAULT_MAX_AGE_SECONDS,
) -> CallbackMessage:
    """Check a push's signature (in constant time) and freshness; return its parsed content."""
    missing = [name for name in ("nonce", "timestamp", "type", "signature") if not form.get(name)]
    if missing:
        raise MalformedCallback(f"missing field(s): {', '.join(missing)}")
    nonce, raw_timestamp = form["nonce"], form["timestamp"]
    expected = callback_signature(creds, nonce, raw_timestamp)
    given = form["signature"].strip().lower().encode("utf-8", "replace")
    if not hmac.compare_digest(expected.encode(), given):
        raise BadSignature("signature does not match the account's credentials")
    try:
        timestamp_ms = int(raw_timestamp)
    except ValueError:
        raise MalformedCallback(f"timestamp is not a number: {raw_timestamp!r}") from None
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    age = abs(now_ms - timestamp_ms) / 1000
    if age > max_age_seconds:
        raise StaleCallback(f"timestamp is {age:.0f} s from now; at most {max_age_seconds:.0f} s")
    raw_data = form.get("data") or "{}"
    try:
        data = json.loads(raw_data)
    except ValueError:
        raise MalformedCallback("data is not JSON") from None
    if not isinstance(data, dict):
        raise MalformedCallback("data is not a JSON object")
    return CallbackMessage(type=form["type"], nonce=nonce, timestamp_ms=timestamp_ms, data=data)


def sign_audit_result(message: CallbackMessage) -> SignAuditResult:
    """The signature result carried by an ``SMS_SIGN`` push."""
    if message.type != SMS_SIGN:
        raise MalformedCallback(f"not an {SMS_SIGN} push: {message.type!r}")
    data = message.data
    try:
        sign_id = int(data["signId"])
        status = Status(int(data["status"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedCallback(f"SMS_SIGN data lacks a valid signId or status ({exc})") from None
    reason = data.get("refuseReason")
    return SignAuditResult(
        sign_id=sign_id, status=status, refuse_reason=str(reason) if reason else None
    )
