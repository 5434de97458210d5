"""The reaper: repairs what a crash between two steps left behind, run by the scheduler tick.

Each repair is bounded in size per pass and reads only what is due (sorted sets by time, on
Redis's clock). One script moves, atomically, expired in-flight leases (a job whose process
died) and due probes (the head job of an externally blocked account) into the outbox; then
every outbox entry that is due gets its message: a job whose sender died, a retry whose
delayed message was lost with a worker's memory, a message never picked up. Sending comes
before the entry moves on, so a pass killed at any point loses nothing: the next pass sends
what this one did not. Every ``full`` pass also checks each account's gate (a finished holder
released, a stranded FIFO head promoted, a blocked head given a probe), drops expired job ids
from the state indexes, and matches pushed results kept for unknown sign ids again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import structlog

from worker.dispatch import Dispatcher
from worker.records import TERMINAL
from worker.store import Store, texts

log = structlog.get_logger(__name__)
BATCH = 500


@dataclass
class Repairs:
    """What one reaper pass did."""

    resent: int = 0
    expired_leases: int = 0
    probes: int = 0
    gates_repaired: int = 0
    pruned: int = 0
    jobs: list[str] = field(default_factory=list)


class Reaper:
    """One pass over everything that may need repair."""

    def __init__(self, store: Store, dispatch: Dispatcher) -> None:
        self.store = store
        self.keys = store.keys
        self.settings = store.settings
        self.dispatch = dispatch
        # Matches results kept for unknown sign ids to unconfirmed creates again (the
        # tracker's ``settle_kept``): a match that failed once is tried on every full pass.
        self.settle_kept: Callable[[], object] = lambda: None

    def tick(self, *, full: bool = False) -> Repairs:
        """Repair what is due; with ``full``, also audit every gate and prune indexes."""
        moves = self.store.reap(BATCH)
        repairs = Repairs(expired_leases=moves.expired_leases, probes=moves.probes)
        due = moves.due
        if full:
            # A repaired gate's next job is in the outbox already, and is sent now.
            handed = self._repair_gates()
            repairs.gates_repaired = len(handed)
            repairs.pruned = self._prune()
            self.settle_kept()
            due = list(dict.fromkeys([*due, *handed]))
        repairs.resent = len(due)
        if due:
            self.dispatch.jobs(due)
            log.info("reaper_repaired", **{k: v for k, v in vars(repairs).items() if v})
        repairs.jobs = due
        return repairs

    def _repair_gates(self) -> list[str]:
        accounts = texts(self.store.redis.smembers(self.keys.accounts()))
        handed = []
        for account, repair in zip(accounts, self.store.repair_many(accounts), strict=True):
            if repair.what != "ok":
                log.warning(
                    "gate_repaired", account=account, what=repair.what, next_job=repair.next_job
                )
                if repair.next_job:
                    handed.append(repair.next_job)
        return handed

    def _prune(self) -> int:
        cutoff = self.store.time_ms() - self.settings.retention.job_ms
        pipe = self.store.redis.pipeline(transaction=False)
        for state in TERMINAL:
            pipe.zremrangebyscore(self.keys.jobs_by_state(state), "-inf", cutoff)
        return int(sum(pipe.execute()))
