"""Standard Webhooks signing, through the ``standardwebhooks`` package (no hand-written crypto):
secrets, the three headers of a delivery, and ``verify`` for Python receivers."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import standardwebhooks

from worker.errors import WebhookError

PREFIX = "whsec_"


class WebhookVerificationError(Exception):
    """A delivery that does not verify: a missing, malformed, forged or stale signature."""


def new_secret() -> str:
    """A new endpoint secret: ``whsec_`` and 24 random bytes in base64."""
    return PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()


def check_secret(secret: str) -> str:
    """The secret, stripped, if it is a usable Standard Webhooks secret; else WebhookError."""
    secret = secret.strip()
    body = secret.removeprefix(PREFIX)
    try:
        raw = base64.b64decode(body, validate=True)
    except (ValueError, binascii.Error):
        raw = b""
    if not secret.startswith(PREFIX) or len(raw) < 16 or len(raw) > 64:
        raise WebhookError(
            "a webhook secret must be whsec_ followed by 16 to 64 bytes in base64 "
            "(leave --secret-file out to have one made)"
        )
    return secret


def headers(secret: str, message_id: str, body: str, at: datetime | None = None) -> dict[str, str]:
    """The Standard Webhooks headers for one delivery of ``body``."""
    at = at or datetime.now(UTC)
    signature = standardwebhooks.Webhook(secret).sign(message_id, at, body)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(at.timestamp())),
        "webhook-signature": signature,
        "content-type": "application/json",
    }


def verify(headers: Mapping[str, str], body: bytes | str, secret: str) -> dict[str, Any]:
    """Check a delivery as a receiver: the signature over the body with the endpoint's secret,
    and a timestamp within five minutes of now. Returns the event; raises
    WebhookVerificationError for anything that does not verify."""
    try:
        event = standardwebhooks.Webhook(secret).verify(body, dict(headers))
    except standardwebhooks.WebhookVerificationError as exc:
        raise WebhookVerificationError(str(exc)) from None
    except (ValueError, TypeError, binascii.Error, RuntimeError) as exc:
        # A malformed header or body (no comma in a signature, bad base64, not JSON).
        raise WebhookVerificationError(f"malformed delivery: {exc}") from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return event
