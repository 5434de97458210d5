"""Webhook deliveries: the stream fanned out to endpoints, one delivery in flight per
(endpoint, account) so a consumer sees an account's events in stream order, retries on a
schedule kept in Redis (a sorted set, not unacked delayed messages), every attempt recorded,
dead deliveries kept and visible, and an endpoint that keeps failing disabled with an event.

Outcomes of one attempt: a 2xx is delivered; a 4xx other than 408, 409 and 429 is permanent
(dead at once), as is a target that may not be reached; anything else (a connection error, a
timeout, 408, 409, 429 after its Retry-After, 3xx, 5xx) is retried on the schedule, and dead
after its last step.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog

from worker import events, tracing
from worker.dispatch import Dispatcher
from worker.errors import SecretKeyError, WebhookError
from worker.store import Store, fields, text, texts
from worker.webhooks.endpoints import Endpoint, Endpoints
from worker.webhooks.signing import headers as signed_headers
from worker.webhooks.target import TargetRefused, resolve

log = structlog.get_logger(__name__)
FANOUT_BATCH = 500
FANOUT_ROUNDS = 10  # a tick fans out at most this many batches; the rest wait for the next
CLAIM_BATCH = 500
ATTEMPTS_KEPT = 1000
BODY_KEPT = 1024  # bytes of a response body kept in an attempt's record
RESPONSE_CAP = 64 * 1024  # bytes of a response read at most
RETRYABLE_4XX = frozenset({408, 409, 429})
USER_AGENT = "signq-webhooks"


@dataclass(frozen=True)
class Pumped:
    """What one pump did: events read, deliveries made, deliveries sent for."""

    events: int
    made: int
    sent: int


@dataclass(frozen=True)
class Attempt:
    """What one attempt saw."""

    outcome: str  # delivered, retry, dead
    status: int | None
    duration_ms: float
    body: str
    error: str
    retry_after: float | None = None


class Deliveries:
    """Fan-out, sending and the records of deliveries."""

    def __init__(
        self,
        store: Store,
        endpoints: Endpoints,
        dispatch: Dispatcher,
        client: httpx.Client | None = None,
    ) -> None:
        self.store = store
        self.keys = store.keys
        self.settings = store.settings
        self.endpoints = endpoints
        self.dispatch = dispatch
        self.schedule = self.settings.webhook_schedule
        # How long a sent delivery belongs to its sender: past it, it is sent again.
        self.hold_ms = int((self.settings.webhook_timeout * 2 + 30) * 1000)
        self._client = client
        self._client_lock = threading.Lock()

    @property
    def client(self) -> httpx.Client:
        """The HTTP client, made on first use (its TLS context costs milliseconds, which every
        process that never sends a webhook would pay)."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = httpx.Client(
                        follow_redirects=False,
                        timeout=httpx.Timeout(self.settings.webhook_timeout),
                        headers={"user-agent": USER_AGENT},
                        trust_env=False,
                    )
        return self._client

    def pump(self) -> Pumped:
        """Fan new events out to deliveries and send for those due (the scheduler's tick)."""
        read = made = waiting = 0
        k = self.keys
        fanout = self.store.script(
            "wh_fanout", keys=[k.webhooks(), k.events(), k.wh_cursor(), k.wh_due()]
        )
        for _ in range(FANOUT_ROUNDS):
            # Up to the stream's tail now: the keys one run asks for are what the next needs.
            upto = events.tail(self.store.redis, k.events())
            batch, new, waiting = (
                int(x) for x in texts(fanout(FANOUT_BATCH, "+" if upto == "0-0" else upto))
            )
            read, made = read + batch, made + new
            if batch < FANOUT_BATCH:
                break
        if not waiting:
            return Pumped(read, made, 0)
        due = texts(self.store.script("wh_claim", keys=[k.wh_due()])(CLAIM_BATCH, self.hold_ms))
        if due:
            self.dispatch.webhooks(due)
        return Pumped(read, made, len(due))

    def deliver(self, delivery_id: str) -> str:
        """One attempt of a delivery (the actor's work); returns its outcome in a word."""
        data = fields(self.store.redis.hgetall(self.keys.wh_delivery(delivery_id)))
        if data.get("state") != "pending":
            return "stale"
        # One sender at a time: a second message for it (a claim after a lost one) waits.
        lock = self.keys.wh_lock(delivery_id)
        if not self.store.redis.set(lock, "1", nx=True, px=self.hold_ms):
            return "busy"
        endpoint = self.endpoints.get(data["endpoint"])
        if endpoint is None:
            return self._settle(delivery_id, data, "dropped", None, "endpoint removed")
        if not endpoint.enabled:
            return self._settle(delivery_id, data, "dead", None, "endpoint disabled")
        try:
            secret = self.endpoints.secret(endpoint)
        except SecretKeyError as exc:
            # This worker's key is wrong, not the receiver: retried on the schedule.
            log.error("webhook_secret_unreadable", endpoint=endpoint.id, error=str(exc))
            failed = Attempt("retry", None, 0.0, "", str(exc))
            return self._settle(delivery_id, data, self._next(data, failed), failed, str(exc))
        with tracing.span(
            "signq.webhook.deliver",
            endpoint=endpoint.id,
            account=data.get("account", ""),
            event_id=data.get("event_id", ""),
            delivery=delivery_id,
        ) as span:
            attempt = self._send(endpoint, secret, data)
            outcome = self._next(data, attempt)
            tracing.annotate(span, outcome=outcome, http_status=attempt.status)
        return self._settle(delivery_id, data, outcome, attempt, attempt.error)

    def _send(self, endpoint: Endpoint, secret: str, data: dict[str, str]) -> Attempt:
        body = data["body"]
        started = time.perf_counter()

        def took() -> float:
            return round((time.perf_counter() - started) * 1000, 1)

        try:
            target = resolve(endpoint.url, allow_private=self.settings.webhooks_allow_private)
        except TargetRefused as exc:
            return Attempt("dead", None, took(), "", str(exc))
        request = self.client.build_request(
            "POST",
            target.url,
            content=body.encode(),
            headers={**signed_headers(secret, data["event_id"], body), "host": target.host},
            extensions={"sni_hostname": target.sni} if target.sni else {},
        )
        try:
            response = self.client.send(request, stream=True)
            try:
                received = bytearray()
                for chunk in response.iter_bytes():
                    received += chunk
                    if len(received) >= RESPONSE_CAP:
                        break
            finally:
                response.close()
        except httpx.HTTPError as exc:
            return Attempt("retry", None, took(), "", f"{type(exc).__name__}: {exc}"[:300])
        status = response.status_code
        kept = bytes(received[:BODY_KEPT]).decode("utf-8", "replace")
        if 200 <= status < 300:
            return Attempt("delivered", status, took(), kept, "")
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            return Attempt("dead", status, took(), kept, f"HTTP {status} (permanent)")
        return Attempt("retry", status, took(), kept, f"HTTP {status}", _retry_after(response))

    def _next(self, data: dict[str, str], attempt: Attempt) -> str:
        if attempt.outcome != "retry":
            return attempt.outcome
        made = int(data.get("attempts") or 0) + 1
        return "retry" if made < len(self.schedule) else "dead"

    def _settle(
        self,
        delivery_id: str,
        data: dict[str, str],
        outcome: str,
        attempt: Attempt | None,
        error: str,
    ) -> str:
        made = int(data.get("attempts") or 0) + 1
        wait_ms = 0
        if outcome == "retry" and attempt is not None:
            wait = self.schedule[made]
            if attempt.retry_after is not None:
                wait = max(wait, attempt.retry_after)
            wait_ms = int(wait * 1000)
        record = ""
        if attempt is not None:
            record = json.dumps(
                {
                    "delivery": delivery_id,
                    "event_id": data.get("event_id"),
                    "account": data.get("account") or None,
                    "attempt": made,
                    "at": self.store.time_ms(),
                    "outcome": outcome,
                    "status": attempt.status,
                    "duration_ms": attempt.duration_ms,
                    "body": attempt.body,
                    "error": attempt.error or None,
                },
                ensure_ascii=False,
            )
        endpoint = data.get("endpoint", "")
        # Published only if this failure disables the endpoint: made only for failures.
        disabled_event = (
            events.make(
                "webhook.endpoint_disabled",
                "",
                endpoint=endpoint,
                reason="failing for longer than the disable period",
            )
            if outcome in ("retry", "dead")
            else ""
        )
        result, nxt, disabled = texts(
            self.store.script("wh_settle", keys=self._settle_keys(delivery_id, data))(
                delivery_id,
                outcome,
                wait_ms,
                record,
                ATTEMPTS_KEPT,
                error,
                int(self.settings.retention.job_ms),
                int(self.settings.webhook_disable_after_hours * 3_600_000),
                disabled_event,
                self.hold_ms,
            )
        )
        if nxt:
            self.dispatch.webhooks([nxt])
        if disabled:
            log.warning("webhook_endpoint_disabled", endpoint=endpoint)
        log.info(
            "webhook_attempt",
            endpoint=endpoint,
            delivery=delivery_id,
            outcome=result,
            status=attempt.status if attempt else None,
            error=error or None,
        )
        return result

    def test(self, endpoint_id: str) -> str:
        """Queue a ``webhook.test`` event for one endpoint; returns the delivery id."""
        self.endpoints.require(endpoint_id)
        body = events.make("webhook.test", "", endpoint=endpoint_id)
        event_id = json.loads(body)["id"]
        delivery_id = f"{endpoint_id}:test:{event_id}"
        self._enqueue(delivery_id, endpoint_id, account="", event_id=event_id, sid="", body=body)
        return delivery_id

    def replay(self, endpoint_id: str, since: str) -> int:
        """Queue again, for one endpoint, every event on the stream from ``since`` (a stream id
        or a time) that its filters match; returns how many."""
        endpoint = self.endpoints.require(endpoint_id)
        start = _stream_start(since)
        count = 0
        batch = f"r{secrets.token_hex(3)}"
        while True:
            entries = self.store.redis.xrange(self.keys.events(), min=start, count=500) or []
            for raw_id, raw_fields in entries:
                sid, body = text(raw_id), text((raw_fields or {}).get("event"))
                try:
                    ev = json.loads(body)
                except ValueError:
                    continue
                account = ev.get("account") if isinstance(ev.get("account"), str) else ""
                if endpoint.types and ev.get("type") not in endpoint.types:
                    continue
                if endpoint.accounts and account not in endpoint.accounts:
                    continue
                self._enqueue(
                    f"{endpoint_id}:{sid}:{batch}",
                    endpoint_id,
                    account=account,
                    event_id=str(ev.get("id") or sid),
                    sid=sid,
                    body=body,
                )
                count += 1
            if len(entries) < 500:
                return count
            start = f"({text(entries[-1][0])}"

    def _enqueue(
        self, delivery_id: str, endpoint: str, *, account: str, event_id: str, sid: str, body: str
    ) -> None:
        if not int(
            self.store.script(
                "wh_enqueue", keys=self._enqueue_keys(delivery_id, endpoint, account)
            )(delivery_id, endpoint, account, event_id, sid, body)
        ):
            raise WebhookError(f"no webhook endpoint {endpoint!r}")

    def _settle_keys(self, delivery_id: str, data: dict[str, str]) -> list[str]:
        k = self.keys
        keys = [k.wh_delivery(delivery_id), k.wh_lock(delivery_id), k.wh_due(), k.events()]
        endpoint, account = data.get("endpoint"), data.get("account")
        if endpoint is not None and account is not None:
            keys += [k.webhook(endpoint), k.wh_attempts(endpoint), k.wh_dead(endpoint)]
            keys += [k.wh_slot(endpoint, account), k.wh_fifo(endpoint, account)]
        return keys

    def _enqueue_keys(self, delivery_id: str, endpoint: str, account: str) -> list[str]:
        k = self.keys
        return [
            k.webhook(endpoint),
            k.wh_delivery(delivery_id),
            k.wh_slot(endpoint, account),
            k.wh_fifo(endpoint, account),
            k.wh_due(),
        ]

    def attempts(self, endpoint_id: str, limit: int = 50) -> list[dict[str, Any]]:
        """An endpoint's latest attempts, newest first."""
        self.endpoints.require(endpoint_id)
        raw = self.store.redis.lrange(self.keys.wh_attempts(endpoint_id), 0, limit - 1)
        return [json.loads(text(x)) for x in raw]

    def dead(self, endpoint_id: str, limit: int = 100) -> list[dict[str, str]]:
        """An endpoint's dead deliveries, newest first (body left out)."""
        ids = texts(self.store.redis.zrevrange(self.keys.wh_dead(endpoint_id), 0, limit - 1))
        found = []
        for delivery_id in ids:
            data = fields(self.store.redis.hgetall(self.keys.wh_delivery(delivery_id)))
            if data:
                data.pop("body", None)
                found.append({"delivery": delivery_id, **data})
        return found

    def close(self) -> None:
        """Close the HTTP client, if one was made."""
        if self._client is not None:
            self._client.close()


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime  # noqa: PLC0415

        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _stream_start(since: str) -> str:
    """A stream id to read from: a stream id as given, or a time (ISO 8601 or ms)."""
    since = since.strip()
    if since.count("-") == 1 and all(part.isdigit() for part in since.split("-")):
        return since
    if since.isdigit():
        return f"{since}-0"
    try:
        when = datetime.fromisoformat(since.replace("Z", "+00:00"))
    except ValueError:
        raise WebhookError(
            f"--since must be a stream id (like 1700000000000-0) or a time "
            f"(like 2026-11-30T12:00:00Z), got {since!r}"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return f"{int(when.timestamp() * 1000)}-0"
