"""`signq status`: one look at everything an operator asks about first."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from worker.broker import queues
from worker.keys import parse_member
from worker.records import STATES
from worker.runtime import Runtime
from worker.store import fields, text, texts

PAGE = 5000


def queue_depths(runtime: Runtime) -> dict[str, dict[str, int]]:
    """Ready, delayed and dead-lettered messages of each of signq's queues."""
    if runtime.settings.rabbitmq:
        # RabbitMQ's own counts (a declare answers them), for the queue, its delay and dead
        # letter queues.
        counts = getattr(runtime.broker, "get_queue_message_counts")  # noqa: B009
        return {
            queue: dict(zip(("ready", "delayed", "dead_letters"), counts(queue), strict=True))
            for queue in queues(runtime.settings)
        }
    keys = runtime.store.keys
    r = runtime.store.redis
    depths = {}
    for queue in queues(runtime.settings):
        pipe = r.pipeline(transaction=False)
        pipe.llen(keys.dramatiq_queue(queue))
        pipe.llen(keys.dramatiq_delayed(queue))
        pipe.zcard(keys.dramatiq_dead(queue))
        ready, delayed, dead = pipe.execute()
        depths[queue] = {"ready": ready, "delayed": delayed, "dead_letters": dead}
    return depths


def collect(runtime: Runtime) -> dict[str, Any]:
    """Everything `signq status` shows, as one JSON-ready dict."""
    keys = runtime.store.keys
    r = runtime.store.redis
    pipe = r.pipeline(transaction=False)
    for state in STATES:
        pipe.zcard(keys.jobs_by_state(state))
    pipe.scard(keys.gates())
    for name in ("outbox", "inflight", "probes", "due"):
        pipe.zcard(getattr(keys, name)())
    pipe.zcount(keys.due(), "-inf", runtime.store.time_ms())
    pipe.get(keys.leader())
    pipe.pttl(keys.leader())
    pipe.hgetall(keys.ticks())
    pipe.xlen(keys.events())
    pipe.xrevrange(keys.events(), count=1)
    replies = iter(pipe.execute())
    jobs = {state: next(replies) for state in STATES}
    gates, outbox, inflight, probes, tracked = (next(replies) for _ in range(5))
    due = next(replies)
    leader, leader_ttl, ticks = text(next(replies)), next(replies), fields(next(replies))
    stream_length, last = next(replies), next(replies)
    accounts = runtime.accounts.all()
    return {
        "queues": queue_depths(runtime),
        "jobs": {"by_state": jobs, "outbox": outbox, "in_flight": inflight},
        "accounts": {
            "total": len(accounts),
            "audit_pending": gates,
            "paused": [a.name for a in accounts if a.status == "paused"],
            "blocked": [a.name for a in accounts if a.blocked],
            "probes_scheduled": probes,
            "unconfirmed_jobs": jobs["unconfirmed"],
        },
        "parked_jobs": jobs["parked"],
        "signatures": {"tracked": tracked, "due": due, "by_status": _by_status(runtime)},
        "scheduler": {
            "leader": leader or None,
            "lease_ms": leader_ttl if leader else None,
            "last_tick_at": int(ticks["at"]) if ticks.get("at") else None,
            "last_tick_ms": float(ticks["ms"]) if ticks.get("ms") else None,
            "last_tick_due": int(ticks["due"]) if ticks.get("due") else None,
            "ticks": int(ticks.get("count") or 0),
        },
        "events": {"length": stream_length, "last_id": str(last[0][0]) if last else None},
    }


def _by_status(runtime: Runtime) -> dict[str, int]:
    """Tracked signatures by last known status (pipelined reads, a page at a time)."""
    keys = runtime.store.keys
    r = runtime.store.redis
    names = {"0": "pending", "1": "approved", "2": "rejected", "": "unknown"}
    counts = dict.fromkeys(names.values(), 0)
    offset = 0
    while True:
        members = texts(r.zrange(keys.due(), offset, offset + PAGE - 1))
        if not members:
            return counts
        offset += len(members)
        pipe = r.pipeline(transaction=False)
        for member in members:
            pipe.hget(keys.signature(*parse_member(member)), "status")
        for status in pipe.execute():
            counts[names.get(text(status), "unknown")] += 1


class StateCollector:
    """Prometheus gauges of what `signq status` shows, read from Redis at scrape time (the
    scheduler serves them)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[Any]:
        """Queue depths, gates, parked jobs, tracked and due signatures, account states."""
        from prometheus_client.core import GaugeMetricFamily  # noqa: PLC0415

        started = time.perf_counter()
        state = collect(self.runtime)
        queue = GaugeMetricFamily(
            "signq_queue_messages", "Messages by queue and kind.", labels=["queue", "kind"]
        )
        for name, depths in state["queues"].items():
            for kind, value in depths.items():
                queue.add_metric([name, kind], value)
        yield queue
        jobs = GaugeMetricFamily(
            "signq_jobs", "Jobs by state (finished ones within retention).", labels=["state"]
        )
        for name, value in state["jobs"]["by_state"].items():
            jobs.add_metric([name], value)
        yield jobs
        yield GaugeMetricFamily(
            "signq_parked_jobs",
            "Jobs waiting for their account's gate.",
            value=state["parked_jobs"],
        )
        yield GaugeMetricFamily(
            "signq_gates_held",
            "Accounts with an audit pending or being sent.",
            value=state["accounts"]["audit_pending"],
        )
        accounts = GaugeMetricFamily(
            "signq_accounts", "Accounts by condition.", labels=["condition"]
        )
        accounts.add_metric(["total"], state["accounts"]["total"])
        accounts.add_metric(["paused"], len(state["accounts"]["paused"]))
        accounts.add_metric(["blocked"], len(state["accounts"]["blocked"]))
        yield accounts
        yield GaugeMetricFamily(
            "signq_tracked_signatures", "Tracked signatures.", value=state["signatures"]["tracked"]
        )
        yield GaugeMetricFamily(
            "signq_due_signatures",
            "Tracked signatures due for a check.",
            value=state["signatures"]["due"],
        )
        yield GaugeMetricFamily(
            "signq_events_stream_length",
            "Entries in the events stream.",
            value=state["events"]["length"],
        )
        yield GaugeMetricFamily(
            "signq_state_scrape_seconds",
            "Time to read this state.",
            value=time.perf_counter() - started,
        )
