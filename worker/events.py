"""Events: facts about jobs, signatures and accounts, published once to a Redis Stream.

Each event is JSON in the stream entry's ``event`` field, mirrored on the pub/sub channel of the
same name. Events that go with a state change are published by the same Lua script that makes
the change, so an event exists exactly when its change happened.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from redis import Redis
from redis.exceptions import ResponseError

log = structlog.get_logger(__name__)

# A stream entry id (ms-seq; the seq may be left out, as Redis allows), as a person or a
# browser's Last-Event-ID gives it.
STREAM_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")
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
        "webhook.test",
        "webhook.endpoint_disabled",
    }
)


def event(kind: str, account: str, **fields: Any) -> dict[str, Any]:
    """A new event with a unique id and the time; fields that are None are left out."""
    if kind not in TYPES:
        raise ValueError(f"unknown event type {kind!r}")
    body: dict[str, Any] = {
        "id": secrets.token_hex(16),
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


@dataclass(frozen=True)
class Entry:
    """A stream entry: its id (for acks and resuming) and the event."""

    id: str
    event: dict[str, Any]


def _entries(reply: Any) -> list[Entry]:
    """Entries of an XRANGE/XREAD/XAUTOCLAIM reply; unreadable ones keep their id."""
    found = []
    for entry_id, fields in reply or ():
        raw = (fields or {}).get("event")
        try:
            event = json.loads(raw) if raw else {}
        except ValueError:
            event = {"type": "unreadable", "raw": raw}
        found.append(Entry(str(entry_id), event))
    return found


def _streamed(reply: Any) -> list[Entry]:
    """Entries of an XREAD/XREADGROUP reply on one stream (a list in RESP2, a dict in RESP3)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        (entries,) = reply.values()
        return _entries(entries[0] if entries and isinstance(entries[0], list) else entries)
    return _entries(reply[0][1])


def matches(
    event: dict[str, Any], types: Iterable[str] | None, accounts: Iterable[str] | None
) -> bool:
    """True when the event is of one of the types and accounts (None: any)."""
    type_ok = types is None or event.get("type") in set(types)
    return type_ok and (accounts is None or event.get("account") in set(accounts))


def read(
    redis: Redis,
    stream: str,
    *,
    since: str = "0",
    follow: bool = False,
    block_ms: int = 1000,
    stop: threading.Event | None = None,
    count: int = 500,
) -> Iterator[Entry]:
    """Entries after ``since`` (``$``: only new ones); with ``follow``, wait for more.

    ``$`` is resolved once, to the stream's last id when reading starts: passed to every
    blocking read, it would mean "after the last entry now" each time, and an entry added
    between two reads (after one timed out, before the next began) would never be seen."""
    last = tail(redis, stream) if since == "$" else since
    while True:
        if follow:
            batch = _streamed(redis.xread({stream: last}, count=count, block=block_ms))
        else:
            start = "-" if last in ("0", "0-0") else f"({last}"
            batch = _entries(redis.xrange(stream, min=start, count=count))
        yield from batch
        if batch:
            last = batch[-1].id
        elif not follow or (stop is not None and stop.is_set()):
            return


def tail(redis: Redis, stream: str) -> str:
    """The id of the stream's last entry ever added (``0-0`` for a stream not there yet)."""
    try:
        info = redis.xinfo_stream(stream)
    except ResponseError:
        return "0-0"
    last = info["last-generated-id"]
    return last.decode() if isinstance(last, bytes) else str(last)


class Consumer:
    """A consumer-group reader for event-driven backends: at-least-once, each entry acked after
    its handler returns, entries left pending by a dead consumer taken over (XAUTOCLAIM).
    Events carry a unique ``id``: a handler that must not act twice keys on it."""

    def __init__(
        self, redis: Redis, stream: str, group: str, consumer: str, *, start: str = "0"
    ) -> None:
        self.redis = redis
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.start = start

    def ensure_group(self) -> None:
        """Create the group (reading from ``start``) unless it exists."""
        try:
            self.redis.xgroup_create(self.stream, self.group, id=self.start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def pending(self, count: int = 100) -> list[Entry]:
        """This consumer's own entries delivered but not acked (after a restart)."""
        return _streamed(
            self.redis.xreadgroup(self.group, self.consumer, {self.stream: "0"}, count=count)
        )

    def claim(self, min_idle_ms: int, count: int = 100) -> list[Entry]:
        """Take over entries idle for ``min_idle_ms`` in any consumer of the group."""
        reply = self.redis.xautoclaim(
            self.stream, self.group, self.consumer, min_idle_ms, start_id="0-0", count=count
        )
        return _entries(reply[1])

    def new(self, count: int = 100, block_ms: int = 1000) -> list[Entry]:
        """Entries never delivered to the group."""
        return _streamed(
            self.redis.xreadgroup(
                self.group, self.consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        )

    def ack(self, *entry_ids: str) -> None:
        """Acknowledge handled entries."""
        if entry_ids:
            self.redis.xack(self.stream, self.group, *entry_ids)

    def run(
        self,
        handler: Callable[[dict[str, Any]], None],
        *,
        stop: threading.Event,
        types: Iterable[str] | None = None,
        accounts: Iterable[str] | None = None,
        claim_idle_ms: int = 60_000,
        block_ms: int = 1000,
        batch: int = 100,
    ) -> None:
        """Handle events until ``stop``: own pending ones first, then abandoned, then new ones.

        An event the handler raised on stays pending and is retried once it has been idle for
        ``claim_idle_ms``; events filtered out are acknowledged without the handler.
        """
        self.ensure_group()
        backlog = self.pending(batch)
        while not stop.is_set():
            entries = backlog or self.claim(claim_idle_ms, batch) or self.new(batch, block_ms)
            backlog = []
            for entry in entries:
                if matches(entry.event, types, accounts):
                    try:
                        handler(entry.event)
                    except Exception:
                        log.exception(
                            "event_handler_failed", entry=entry.id, event_id=entry.event.get("id")
                        )
                        continue
                self.ack(entry.id)
