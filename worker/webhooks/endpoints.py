"""Webhook endpoints: registered in Redis under the prefix, secrets sealed at rest with
SIGNQ_SECRET_KEY as tenants' secrets are, never listed."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field

from worker import events
from worker.accounts import SecretBox
from worker.errors import WebhookError
from worker.store import Store, fields, text, texts
from worker.webhooks.signing import check_secret, new_secret
from worker.webhooks.target import check_url

# Event types an endpoint may filter on.
TYPES = events.TYPES


@dataclass(frozen=True)
class Endpoint:
    """One endpoint as listings show it (never its secret)."""

    id: str
    url: str
    types: list[str]
    accounts: list[str]
    enabled: bool
    created_at: int
    failing_since: int | None = None
    disabled_reason: str = ""
    pending: int = 0
    dead: int = 0
    sealed_secret: str = field(default="", repr=False)

    def to_dict(self) -> dict[str, object]:
        """The endpoint as `signq webhooks list --json` prints it."""
        return {
            "id": self.id,
            "url": self.url,
            "types": self.types,
            "accounts": self.accounts,
            "enabled": self.enabled,
            "created_at": self.created_at,
            "failing_since": self.failing_since,
            "disabled_reason": self.disabled_reason or None,
            "dead": self.dead,
        }


class Endpoints:
    """Register, list, enable, disable and remove endpoints."""

    def __init__(self, store: Store, box: SecretBox) -> None:
        self.store = store
        self.keys = store.keys
        self.box = box

    def add(
        self,
        url: str,
        *,
        types: list[str] | None = None,
        accounts: list[str] | None = None,
        secret: str | None = None,
    ) -> tuple[Endpoint, str]:
        """Register an endpoint; returns it and its secret (made when none is given: shown
        once, by the caller)."""
        url = check_url(url)
        unknown = sorted(set(types or ()) - TYPES)
        if unknown:
            raise WebhookError(
                f"unknown event type {unknown[0]!r}; known: {', '.join(sorted(TYPES))}"
            )
        secret = check_secret(secret) if secret is not None else new_secret()
        endpoint_id = "ep_" + secrets.token_hex(6)
        r = self.store.redis
        since = events.tail(r, self.keys.events())
        pipe = r.pipeline(transaction=True)
        pipe.hset(
            self.keys.webhook(endpoint_id),
            mapping={
                "url": url,
                "types": json.dumps(sorted(set(types or ()))),
                "accounts": json.dumps(sorted(set(accounts or ()))),
                "secret": self.box.seal(secret),
                "enabled": "1",
                "since": since,
                "created_at": self.store.time_ms(),
            },
        )
        pipe.sadd(self.keys.webhooks(), endpoint_id)
        # The first endpoint starts the fan-out from here, not from the stream's beginning.
        pipe.set(self.keys.wh_cursor(), since, nx=True)
        pipe.execute()
        return self.require(endpoint_id), secret

    def get(self, endpoint_id: str) -> Endpoint | None:
        """An endpoint, or None (one round trip)."""
        return self._read([endpoint_id])[0]

    def _read(self, ids: list[str]) -> list[Endpoint | None]:
        """Endpoints by id with their dead-delivery counts, in one pipelined read."""
        pipe = self.store.redis.pipeline(transaction=False)
        for endpoint_id in ids:
            pipe.hgetall(self.keys.webhook(endpoint_id))
            pipe.zcard(self.keys.wh_dead(endpoint_id))
        replies = iter(pipe.execute())
        return [_endpoint(i, fields(next(replies)), int(next(replies))) for i in ids]

    def require(self, endpoint_id: str) -> Endpoint:
        """An endpoint, or WebhookError naming the id."""
        endpoint = self.get(endpoint_id)
        if endpoint is None:
            raise WebhookError(f"no webhook endpoint {endpoint_id!r} (see `signq webhooks list`)")
        return endpoint

    def list(self) -> list[Endpoint]:
        """Every endpoint, oldest first."""
        found = self._read(texts(self.store.redis.smembers(self.keys.webhooks())))
        return sorted((e for e in found if e is not None), key=lambda e: (e.created_at, e.id))

    def secret(self, endpoint: Endpoint) -> str:
        """The endpoint's secret, opened (SecretKeyError when this process's key cannot)."""
        return self.box.open(f"webhook endpoint {endpoint.id}", endpoint.sealed_secret)

    def set_enabled(self, endpoint_id: str, enabled: bool) -> bool:
        """Enable or disable; False if it already was. Enabling clears the failing period."""
        self.require(endpoint_id)
        key = self.keys.webhook(endpoint_id)
        before = text(self.store.redis.hget(key, "enabled")) == "1"
        if enabled:
            self.store.redis.hset(key, "enabled", "1")
            self.store.redis.hdel(key, "failing_since", "disabled_reason", "disabled_at")
        else:
            self.store.redis.hset(
                key, mapping={"enabled": "0", "disabled_reason": "disabled by operator"}
            )
        return before != enabled

    def remove(self, endpoint_id: str) -> None:
        """Forget an endpoint, its dead deliveries and its attempts; deliveries still queued for
        it are dropped as they come due."""
        self.require(endpoint_id)
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.srem(self.keys.webhooks(), endpoint_id)
        pipe.delete(
            self.keys.webhook(endpoint_id),
            self.keys.wh_dead(endpoint_id),
            self.keys.wh_attempts(endpoint_id),
        )
        pipe.execute()


def _endpoint(endpoint_id: str, data: dict[str, str], dead: int) -> Endpoint | None:
    """An endpoint from its hash (None when there is none)."""
    if not data:
        return None
    return Endpoint(
        id=endpoint_id,
        url=data["url"],
        types=json.loads(data.get("types") or "[]"),
        accounts=json.loads(data.get("accounts") or "[]"),
        enabled=data.get("enabled") == "1",
        created_at=int(data.get("created_at") or 0),
        failing_since=int(data["failing_since"]) if data.get("failing_since") else None,
        disabled_reason=data.get("disabled_reason", ""),
        dead=dead,
        sealed_secret=data.get("secret", ""),
    )
