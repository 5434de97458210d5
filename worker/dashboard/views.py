"""What the dashboard reads: every list a range read of an index (never a scan of everything
per request), through the same modules as `signq status`, `jobs` and `accounts`."""

from __future__ import annotations

import json
import time
from typing import Any

from worker.keys import parse_member
from worker.records import STATES
from worker.runtime import Runtime
from worker.status import collect, queue_depths
from worker.store import fields, text, texts

PAGE = 50
EVENTS_LOOKBACK = 5000  # events read back from the stream's end for one account or job


def overview(runtime: Runtime) -> dict[str, Any]:
    """The live figures: jobs by state, queues, gates, due signatures, the scheduler — counts
    only, so it stays cheap at any size."""
    keys, r = runtime.store.keys, runtime.store.redis
    pipe = r.pipeline(transaction=False)
    for state in STATES:
        pipe.zcard(keys.jobs_by_state(state))
    pipe.scard(keys.gates())
    pipe.zcard(keys.due())
    pipe.zcount(keys.due(), "-inf", runtime.store.time_ms())
    pipe.zcard(keys.probes())
    pipe.get(keys.leader())
    pipe.hgetall(keys.ticks())
    pipe.scard(keys.accounts())
    pipe.zrange(keys.jobs_by_state("pending_audit"), 0, 4, withscores=True)
    pipe.zrange(f"{keys.dramatiq_namespace()}:__heartbeats__", 0, 49, withscores=True)
    pipe.zrange(keys.probes(), 0, 19)
    replies = iter(pipe.execute())
    jobs = {state: int(next(replies)) for state in STATES}
    gates, tracked, due, probes = (int(next(replies)) for _ in range(4))
    leader, ticks, accounts = text(next(replies)), fields(next(replies)), int(next(replies))
    oldest, beats, blocked = next(replies), next(replies), texts(next(replies))
    now = runtime.store.time_ms()
    return {
        "at": int(time.time() * 1000),
        "jobs": jobs,
        "queues": queue_depths(runtime),
        "accounts": accounts,
        "audits_pending": gates,
        "blocked_accounts": probes,
        "signatures": {"tracked": tracked, "due": due},
        "scheduler": {
            "leader": leader or None,
            "last_tick_at": int(ticks["at"]) if ticks.get("at") else None,
            "ticks": int(ticks.get("count") or 0),
        },
        "oldest_audits": [
            {"job_id": text(job), "age_s": round((now - since) / 1000)} for job, since in oldest
        ],
        "workers": [
            {"worker": text(worker)[:8], "heartbeat_s": round((now - beat) / 1000, 1)}
            for worker, beat in beats
        ],
        "blocked": blocked,
    }


class Recent:
    """What needs a wider read, kept for ``ttl`` seconds: accounts paused (every account's
    record) and API errors by code among the stream's last events."""

    def __init__(self, runtime: Runtime, ttl: float = 15.0) -> None:
        self.runtime = runtime
        self.ttl = ttl
        self._value: dict[str, Any] = {}
        self._at = -ttl

    def get(self) -> dict[str, Any]:
        """The cached figures, refreshed when older than the ttl."""
        if time.monotonic() - self._at > self.ttl:
            errors: dict[str, int] = {}
            for event in recent_events(self.runtime, kind="job.failed", limit=EVENTS_LOOKBACK):
                code = str((event.get("error") or {}).get("code") or "no code")
                errors[code] = errors.get(code, 0) + 1
            paused = [a.name for a in self.runtime.accounts.all() if a.status == "paused"]
            self._value = {"paused": paused[:50], "paused_count": len(paused), "errors": errors}
            self._at = time.monotonic()
        return self._value


class Slow:
    """`signq status`'s full picture (it reads every account and tracked signature), kept for
    ``ttl`` seconds so a page view never pays it more than that often."""

    def __init__(self, runtime: Runtime, ttl: float = 30.0) -> None:
        self.runtime = runtime
        self.ttl = ttl
        self._value: dict[str, Any] | None = None
        self._at = 0.0

    def get(self) -> dict[str, Any]:
        """The cached status, refreshed when older than the ttl."""
        if self._value is None or time.monotonic() - self._at > self.ttl:
            self._value = collect(self.runtime)
            self._at = time.monotonic()
        return self._value


def account(runtime: Runtime, name: str) -> dict[str, Any]:
    """One account's page: its record, gate, parked jobs, newest jobs and events."""
    acc = runtime.accounts.require(name)
    keys, r = runtime.store.keys, runtime.store.redis
    jobs = runtime.jobs.find(account=name, limit=PAGE)
    holder = text(r.get(keys.gate(name)))
    since = None
    if holder:
        since = text(r.hget(keys.job(holder), "updated_at")) or None
    return {
        "account": acc,
        "gate_holder": holder or None,
        "gate_since": int(since) if since else None,
        "parked": int(r.llen(keys.parked(name))),
        "waiting": int(r.scard(keys.waiting(name))),
        "unconfirmed": int(r.scard(keys.unconfirmed(name))),
        "jobs": jobs,
        "signatures": [
            t for t in (runtime.tracker.get(name, j.sign_id) for j in jobs if j.sign_id) if t
        ],
        "events": recent_events(runtime, account=name, limit=30),
    }


def account_rows(runtime: Runtime, accounts: list[Any]) -> list[dict[str, Any]]:
    """A page of accounts with their gate holder and parked count (one pipelined read)."""
    keys, r = runtime.store.keys, runtime.store.redis
    pipe = r.pipeline(transaction=False)
    for acc in accounts:
        pipe.get(keys.gate(acc.name))
        pipe.llen(keys.parked(acc.name))
    replies = iter(pipe.execute())
    return [
        {"account": acc, "gate_holder": text(next(replies)) or None, "parked": int(next(replies))}
        for acc in accounts
    ]


def recent_events(
    runtime: Runtime,
    *,
    account: str | None = None,
    job_id: str | None = None,
    kind: str | None = None,
    limit: int = 50,
) -> list[dict[str, Any]]:
    """The newest matching events among the stream's last EVENTS_LOOKBACK, newest first."""
    entries = runtime.store.redis.xrevrange(runtime.store.keys.events(), count=EVENTS_LOOKBACK)
    found = []
    for entry_id, raw in entries or []:
        try:
            event = json.loads(text((raw or {}).get("event")))
        except ValueError:
            continue
        if account and event.get("account") != account:
            continue
        if job_id and event.get("job_id") != job_id:
            continue
        if kind and event.get("type") != kind:
            continue
        found.append({"stream_id": text(entry_id), **event})
        if len(found) >= limit:
            break
    return found


def signatures(runtime: Runtime, offset: int) -> list[dict[str, Any]]:
    """A page of tracked signatures by next check time (a range of the due set)."""
    keys, r = runtime.store.keys, runtime.store.redis
    members: list[Any] = list(r.zrange(keys.due(), offset, offset + PAGE - 1, withscores=True))
    pipe = r.pipeline(transaction=False)
    for member, _score in members:
        pipe.hgetall(keys.signature(*parse_member(text(member))))
    rows = []
    for (member, score), data in zip(members, pipe.execute(), strict=True):
        account_name, sign_id = parse_member(text(member))
        rows.append(
            {
                "account": account_name,
                "sign_id": sign_id,
                "next_check": int(score),
                **fields(data),
            }
        )
    return rows


def unconfirmed(runtime: Runtime, offset: int) -> list[Any]:
    """A page of unconfirmed creates, newest first."""
    return runtime.jobs.find(state="unconfirmed", limit=PAGE, offset=offset)


def attempts_by_endpoint(runtime: Runtime) -> list[tuple[Any, list[dict[str, Any]]]]:
    """Each webhook endpoint with its latest failing attempts."""
    rows = []
    for endpoint in runtime.endpoints.list():
        failing = [
            a for a in runtime.deliveries.attempts(endpoint.id, 20) if a["outcome"] != "delivered"
        ]
        rows.append((endpoint, failing[:5]))
    return rows
