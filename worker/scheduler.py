"""The scheduler: periodic work behind a Redis lease, so exactly one instance ticks at a time.

Run several for availability: each tries to take or renew the lease every tick; a standby
takes over within ``SIGNQ_LEADER_TTL_SECONDS`` of the leader dying. A tick does bounded work:
it claims at most ``SIGNQ_POLL_BATCH`` due signatures (a sorted-set range, so its cost grows
with what is due, not with what is tracked) and sends them in poll messages, sends the reaper
(unless one is still outstanding), and starts the periodic cleanup when it is due. Missed ticks
are not replayed: after a stall the next tick simply starts from now.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import redis
import structlog

from worker.dispatch import Dispatcher
from worker.store import Store, text
from worker.tracker import Tracker

log = structlog.get_logger(__name__)
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


@dataclass(frozen=True)
class Tick:
    """What one tick did."""

    leader: bool
    due: int = 0
    poll_messages: int = 0
    reaper_sent: bool = False
    cleanup_sent: bool = False


class Scheduler:
    """One scheduler instance."""

    def __init__(
        self,
        store: Store,
        tracker: Tracker,
        dispatch: Dispatcher,
        node: str | None = None,
        *,
        pump: Callable[[], object] = lambda: None,
    ) -> None:
        self.store = store
        self.keys = store.keys
        self.settings = store.settings
        self.tracker = tracker
        self.dispatch = dispatch
        self.node = node or f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}"
        self.ticks = 0
        # Fans the events stream out to webhook deliveries and sends those due.
        self.pump = pump

    def lead(self) -> bool:
        """Take or renew the lease; True while this instance is the leader."""
        ttl = int(self.settings.leader_ttl_seconds * 1000)
        return self.store.lead(self.node, ttl)

    def resign(self) -> None:
        """Give the lease up at once (a clean shutdown), so a standby need not wait."""
        self.store.resign(self.node)

    def tick(self) -> Tick:
        """One round of periodic work, if this instance leads."""
        if not self.lead():
            return Tick(leader=False)
        started = time.perf_counter()
        self.ticks += 1
        s = self.settings
        due = self.tracker.claim_due(s.poll_batch)
        chunks = [due[i : i + s.poll_chunk] for i in range(0, len(due), s.poll_chunk)]
        for chunk in chunks:
            self.dispatch.poll(chunk)
        reaper = bool(self.store.redis.set(self.keys.reaping(), self.node, nx=True, px=60_000))
        if reaper:
            self.dispatch.reap(self.ticks % s.reap_full_every == 1 or s.reap_full_every == 1)
        cleanup = self._cleanup_due()
        if cleanup:
            self.dispatch.cleanup()
        self.pump()
        self.store.redis.hset(
            self.keys.ticks(),
            mapping={
                "leader": self.node,
                "at": self.store.time_ms(),
                "due": len(due),
                "ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )
        self.store.redis.hincrby(self.keys.ticks(), "count", 1)
        return Tick(True, len(due), len(chunks), reaper, cleanup)

    def _cleanup_due(self) -> bool:
        hours = self.settings.cleanup_interval_hours
        if hours <= 0:
            return False
        now = self.store.time_ms()
        last = text(self.store.redis.get(self.keys.cleanup()))
        if last and now - int(last) < hours * 3_600_000:
            return False
        self.store.redis.set(self.keys.cleanup(), now)
        return True

    def run(self, stop: threading.Event) -> None:
        """Tick every ``SIGNQ_TICK_SECONDS`` until ``stop`` is set; resign on the way out.

        A Redis that does not answer is waited out: one warning, back-off up to 5 s, one line
        when it answers again; a tick that fails otherwise is logged and the next one tried.
        """
        interval = self.settings.tick_seconds
        leading = False
        outage = 0.0
        try:
            while not stop.is_set():
                began = time.monotonic()
                try:
                    tick = self.tick()
                except _REDIS_DOWN as exc:
                    if not outage:
                        log.warning("redis_unavailable", node=self.node, error=str(exc))
                    outage = min(5.0, max(interval, outage * 2))
                    stop.wait(outage)
                    continue
                except Exception:
                    log.exception("tick_failed")
                else:
                    if outage:
                        log.info("redis_available", node=self.node)
                        outage = 0.0
                    if tick.leader != leading:
                        leading = tick.leader
                        log.info("scheduler_leadership", node=self.node, leader=leading)
                # Sleep to the next tick; a tick that overran is not made up for.
                stop.wait(max(0.0, interval - (time.monotonic() - began)))
        finally:
            try:
                self.resign()
            except _REDIS_DOWN:
                log.info("scheduler_stopped_without_resigning", node=self.node)
