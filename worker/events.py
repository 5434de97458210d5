"""Events: facts about jobs, signatures and accounts, published once to a Redis Stream.

Each event is JSON in the stream entry's ``event`` field, mirrored on the pub/sub channel of the
same name. Events that go with a state change are published by the same Lua script that makes
the change, so an event exists exactly when its change happened.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

TYPES = frozenset(
    {
        "job.accepted",
        "job.parked",
        "signature.submitted",
        "signature.approved",
        "signature.rejected",
        "signature.use_changed",
        "signature.deleted",
        "job.failed",
        "job.unconfirmed",
        "account.paused",
        "account.resumed",
        "account.blocked_external",
    }
)


def event(kind: str, account: str, **fields: Any) -> dict[str, Any]:
    """A new event with a unique id and the time; fields that are None are left out."""
    if kind not in TYPES:
        raise ValueError(f"unknown event type {kind!r}")
    body: dict[str, Any] = {
        "id": uuid.uuid4().hex,
        "type": kind,
        "account": account,
        "at": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    body.update({k: v for k, v in fields.items() if v is not None})
    return body


def encode(body: dict[str, Any]) -> str:
    """The JSON stored in the stream."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def make(kind: str, account: str, **fields: Any) -> str:
    """``encode(event(...))``: what the scripts publish."""
    return encode(event(kind, account, **fields))
