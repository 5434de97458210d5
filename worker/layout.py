"""The key layout's version: every process refuses a layout it does not know, and
``signq migrate`` moves data written by an earlier signq into this one, in place.

Layout 1 (before hash tags): per-account keys named ``account:NAME``, idempotency keys one
string each (``idem:NAME:KEY``, with the job's TTL), rate-limit buckets hashes. Layout 2:
per-account keys carry the account as their hash tag (``account:{NAME}``), an account's
idempotency keys are fields of one hash (``idem:{NAME}``) with their expiry in a sorted set
(``idem:expiry:{NAME}``), and a rate-limit bucket is one string.

A migration renames keys one at a time; stop the workers and schedulers first. It can be run
again after an interruption: each step looks for what is still in the old layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from worker.keys import LAYOUT
from worker.store import Store, text, texts

# Per-account keys of layout 1 that are renamed as they are: name -> the Keys method.
_RENAMED = (
    "account",
    "gate",
    "parked",
    "waiting",
    "unconfirmed",
    "orphans",
)
_SCAN = 1000


@dataclass
class Migrated:
    """What a migration moved, by kind of key."""

    before: int
    renamed: dict[str, int] = field(default_factory=dict)
    idempotency_keys: int = 0

    def count(self, kind: str) -> None:
        self.renamed[kind] = self.renamed.get(kind, 0) + 1


def migrate(store: Store) -> Migrated:
    """Move layout-1 data into this layout and record the version."""
    before = store.layout_version()
    done = Migrated(before or LAYOUT)
    if before is not None and before > LAYOUT:
        store.check_layout()  # raises: newer than this code
    if before == 1:
        # Layout 1 indexed running jobs apart; their leases are their index now.
        store.redis.delete(f"{store.settings.prefix}:jobs:state:submitting")
        for account in texts(store.redis.smembers(store.keys.accounts())):
            _account(store, account, done)
        _scanned(store, done)
    store.redis.set(store.keys.layout(), LAYOUT)
    return done


def _rename(store: Store, old: str, new: str, kind: str, done: Migrated) -> None:
    if old != new and store.redis.exists(old):
        store.redis.rename(old, new)
        done.count(kind)


def _account(store: Store, account: str, done: Migrated) -> None:
    p, k = store.settings.prefix, store.keys
    for kind in _RENAMED:
        _rename(store, f"{p}:{kind}:{account}", getattr(k, kind)(account), kind, done)
    _rename(
        store, f"{p}:jobs:account:{account}", k.jobs_by_account(account), "jobs_by_account", done
    )
    # A rate-limit bucket is a hash in layout 1 and a string now; it only says how many requests
    # were made in the last seconds: dropped, not moved.
    store.redis.delete(f"{p}:bucket:{account}")


def _scanned(store: Store, done: Migrated) -> None:
    """Keys whose names hold more than the account: tracked signatures, callback nonces,
    webhook slots and FIFOs, idempotency keys."""
    p, k, r = store.settings.prefix, store.keys, store.redis
    for name in _old(store, f"{p}:sig:*"):
        account, _, sign_id = name.removeprefix(f"{p}:sig:").rpartition(":")
        _rename(store, name, k.signature(account, sign_id), "signature", done)
    for name in _old(store, f"{p}:callback:nonce:*"):
        account, _, nonce = name.removeprefix(f"{p}:callback:nonce:").partition(":")
        _rename(store, name, k.nonce(account, nonce), "nonce", done)
    for kind, short in (("wh_fifo", "whq"), ("wh_slot", "whs")):
        for name in _old(store, f"{p}:{short}:*"):
            endpoint, _, account = name.removeprefix(f"{p}:{short}:").rpartition(":")
            _rename(store, name, getattr(k, kind)(endpoint, account), kind, done)
    for name in _old(store, f"{p}:idem:*"):
        account, _, key = name.removeprefix(f"{p}:idem:").partition(":")
        job, ttl = r.get(name), r.pttl(name)
        if job is None:
            continue
        if key.startswith("content:"):
            r.hset(k.idem(account), key, text(job))
        else:
            r.hset(k.idem(account), f"key:{key}", text(job))
            if int(ttl) > 0:
                expires = store.time_ms() + int(ttl)
                r.hset(k.idem(account), f"exp:{key}", expires)
                r.zadd(k.idem_expiry(account), {key: expires})
        r.delete(name)
        done.idempotency_keys += 1


def _old(store: Store, pattern: str) -> list[str]:
    """Keys matching ``pattern`` that carry no hash tag yet (layout 1)."""
    return [
        name for name in texts(store.redis.scan_iter(match=pattern, count=_SCAN)) if "{" not in name
    ]
