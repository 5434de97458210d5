"""Every Redis client signq makes, built in one place: from SIGNQ_REDIS_URL, or through Redis
Sentinel when SIGNQ_REDIS_SENTINELS is set (redis-py's Sentinel support: each client asks the
sentinels for the current primary and follows a failover by itself)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any
from urllib.parse import unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from worker.settings import Settings


def redis_client(settings: Settings, *, decode: bool = True) -> redis.Redis:
    """A client of the state Redis (its primary, when behind sentinels)."""
    if settings.redis_sentinels:
        sentinel = _sentinel(settings.redis_sentinels)
        client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call,unused-ignore]
            settings.redis_master,
            decode_responses=decode,
            health_check_interval=30,
            **_auth(settings.redis_url),
        )
        return client
    return redis.Redis.from_url(
        settings.redis_url, decode_responses=decode, health_check_interval=30
    )


def sentinel_addresses(value: str) -> list[tuple[str, int]]:
    """``host:port,host:port`` as pairs; ValueError naming a bad one."""
    found = []
    for item in (x.strip() for x in value.split(",")):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{item!r} is not host:port")
        found.append((host.strip("[]"), int(port)))
    return found


def _auth(url: str) -> dict[str, Any]:
    """The password, user and database of SIGNQ_REDIS_URL, for the primary behind sentinels."""
    parts = urlsplit(url)
    auth: dict[str, Any] = {}
    if parts.password:
        auth["password"] = unquote(parts.password)
    if parts.username:
        auth["username"] = unquote(parts.username)
    db = parts.path.strip("/")
    if db.isdigit():
        auth["db"] = int(db)
    return auth


@lru_cache(maxsize=8)
def _sentinel(sentinels: str) -> Sentinel:
    """One Sentinel client per process and sentinel list (it keeps its connections)."""
    return Sentinel(  # type: ignore[no-untyped-call,unused-ignore]  # redis-py types this loosely
        sentinel_addresses(sentinels),
        socket_timeout=2,
        socket_connect_timeout=2,
    )
