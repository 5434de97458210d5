"""The reaper: repairs what a crash between two steps left behind, run by the scheduler tick.

Each repair is bounded in size per tick and reads only what is due (sorted sets by time):

- outbox: a job that should have a message but has had none for a while gets one;
- in-flight leases: a job whose executing process died gets a new message (its next run
  knows its last attempt may have reached the API);
- probes: an externally blocked account's head job is tried again;
- unconfirmed holds: a create never settled releases its account's gate after the hold;
- every ``full`` tick: each account's gate is checked (a finished holder released, a stranded
  FIFO head promoted), and expired job ids leave the state indexes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import structlog

from worker import events
from worker.jobs import TERMINAL, Enqueue, retention_ms
from worker.store import Change, Store, now_ms, text, texts

log = structlog.get_logger(__name__)
BATCH = 500


@dataclass
class Repairs:
    """What one reaper pass did."""

    resent: int = 0
    expired_leases: int = 0
    probes: int = 0
    holds_released: int = 0
    gates_repaired: int = 0
    pruned: int = 0
    jobs: list[str] = field(default_factory=list)


class Reaper:
    """One pass over everything that may need repair."""

    def __init__(self, store: Store, enqueue: Enqueue) -> None:
        self.store = store
        self.keys = store.keys
        self.settings = store.settings
        self.enqueue = enqueue

    def tick(self, *, full: bool = False) -> Repairs:
        """Repair what is due; with ``full``, also audit every gate and prune indexes."""
        repairs = Repairs()
        now = now_ms()
        redis = self.store.redis
        grace = int(self.settings.outbox_grace_seconds * 1000)
        stale = texts(
            redis.zrangebyscore(self.keys.outbox(), "-inf", now - grace, start=0, num=BATCH)
        )
        repairs.resent = len(stale)
        expired = texts(redis.zrangebyscore(self.keys.inflight(), "-inf", now, start=0, num=BATCH))
        if expired:
            redis.zrem(self.keys.inflight(), *expired)
            repairs.expired_leases = len(expired)
        probe_accounts = texts(
            redis.zrangebyscore(self.keys.probes(), "-inf", now, start=0, num=BATCH)
        )
        heads = []
        if probe_accounts:
            redis.zrem(self.keys.probes(), *probe_accounts)
            pipe = redis.pipeline(transaction=False)
            for account in probe_accounts:
                pipe.get(self.keys.gate(account))
            heads = [h for h in texts(pipe.execute()) if h]
            repairs.probes = len(heads)
        released = self._release_holds(now)
        repairs.holds_released = len(released)
        repaired = self._repair_gates() if full else []
        repairs.gates_repaired = len(repaired)
        if full:
            repairs.pruned = self._prune(now)
        to_send = list(dict.fromkeys([*stale, *expired, *heads, *released, *repaired]))
        if to_send:
            self.enqueue(to_send)
            log.info("reaper_repaired", **{k: v for k, v in vars(repairs).items() if v})
        repairs.jobs = to_send
        return repairs

    def _release_holds(self, now: int) -> list[str]:
        ids = texts(
            self.store.redis.zrangebyscore(self.keys.unconfirmed(), "-inf", now, start=0, num=BATCH)
        )
        handed = []
        for job_id in ids:
            account = text(self.store.redis.hget(self.keys.job(job_id), "account"))
            why = "unconfirmed hold ended; the account's gate was released"
            applied = self.store.apply(
                Change(
                    id=job_id,
                    from_=["unconfirmed"],
                    set={"error": json.dumps({"code": None, "message": why})},
                    release=True,
                    terminal=retention_ms(self.settings.job_retention_days),
                    events=[events.make("job.unconfirmed", account, job_id=job_id, reason=why)],
                )
            )
            if not applied.applied:
                self.store.redis.zrem(self.keys.unconfirmed(), job_id)
            if applied.next_job:
                handed.append(applied.next_job)
        return handed

    def _repair_gates(self) -> list[str]:
        accounts = texts(self.store.redis.smembers(self.keys.accounts()))
        pipe = self.store.redis.pipeline(transaction=False)
        for account in accounts:
            self.store.run("repair", account, pipe=pipe)
        handed = []
        for account, (what, next_job) in zip(accounts, pipe.execute(), strict=True):
            if str(what) != "ok":
                log.warning("gate_repaired", account=account, what=str(what), next_job=next_job)
                if next_job:
                    handed.append(str(next_job))
        return handed

    def _prune(self, now: int) -> int:
        cutoff = now - retention_ms(self.settings.job_retention_days)
        pipe = self.store.redis.pipeline(transaction=False)
        for state in TERMINAL:
            pipe.zremrangebyscore(self.keys.jobs_by_state(state), "-inf", cutoff)
        return int(sum(pipe.execute()))
