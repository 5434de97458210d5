"""Every way a running job's state changes, each named, each one atomic step in Redis.

A transition builds its change and its events privately (see ``lua/apply.lua``), records it
whatever Redis is doing (an outcome the API gave is never dropped for want of Redis: bounded,
and logged), counts it, and hands the account's gate to the next parked job when it frees it.
The pipeline decides which transition an outcome is; this module is how each is written.
"""

from __future__ import annotations

import json
from typing import Any

import redis
import structlog

from worker import events
from worker.clock import SYSTEM_CLOCK, Clock
from worker.dispatch import Dispatcher
from worker.jsms.errors import AuditPending, JsmsError
from worker.keys import member
from worker.metrics import metrics
from worker.records import JobRecord, submitted_change
from worker.store import Applied, Change, Store, text

log = structlog.get_logger(__name__)
# States from which a submission the API accepted is still recorded: whatever a second run
# (after a lost lease) or the uncertain path did meanwhile, a known sign id settles its job.
ACCEPTABLE_FROM = ["submitting", "queued", "parked", "unconfirmed"]
# How long a run keeps trying to record an outcome while Redis does not answer.
RECORD_PATIENCE_SECONDS = 600.0
REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class Transitions:
    """The job transitions of one process, on its store."""

    def __init__(
        self,
        store: Store,
        dispatch: Dispatcher,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.settings = store.settings
        self.dispatch = dispatch
        self.clock = clock

    def apply(self, change: Change, **context: object) -> Applied:
        """Apply a change, waiting out a Redis that does not answer (a restart, a failover)."""
        deadline = self.clock() + RECORD_PATIENCE_SECONDS
        pause = 0.1
        while True:
            try:
                applied = self.store.apply(change)
            except REDIS_DOWN as exc:
                if self.clock() + pause > deadline:
                    log.error("outcome_not_recorded", to=change.to, error=str(exc), **context)
                    raise
                log.warning("outcome_record_waiting_for_redis", error=str(exc), **context)
                self.clock.sleep(pause)
                pause = min(5.0, pause * 2)
                continue
            if applied.next_job:
                self.dispatch.jobs([applied.next_job])
            return applied

    def accepted(self, job: JobRecord, sign_id: int) -> Applied:
        """The API accepted a submission: pending audit, tracked, ``signature.submitted``; the
        proof that nothing of the account's was pending ends its probe mode."""
        change = submitted_change(job, sign_id, self.settings.poll_policy)
        change.from_ = ACCEPTABLE_FROM
        change.unpark = True
        change.proof = True
        return self.apply(change, api_sign_id=sign_id)

    def tracked_after_the_end(self, job: JobRecord, sign_id: int) -> None:
        """A sign id for a job that ended meanwhile: the signature exists all the same, so it
        is tracked and its audit result published."""
        key = self.store.keys.signature(job.account, sign_id)
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.hsetnx(key, "since", self.store.time_ms())
        pipe.hsetnx(key, "sign", job.sign or "")
        pipe.zadd(self.store.keys.due(), {member(job.account, sign_id): 0}, nx=True)
        pipe.execute()

    def unconfirmed(self, job: JobRecord, why: str) -> Applied:
        """A create whose outcome is unknown: ``job.unconfirmed``; the gate goes on at once to
        the next job, which probes (the account is in probe mode)."""
        error = {"code": 50103, "message": f"create outcome unknown: {why}"}
        return self.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to="unconfirmed",
                set={"error": json.dumps(error), "waiting_for": "sign_id"},
                lease_clear=True,
                release=True,
                probing=True,
                events=[
                    events.make(
                        "job.unconfirmed", job.account, job_id=job.id, sign=job.sign, reason=why
                    )
                ],
            )
        )

    def uncertain(self, job: JobRecord, exc: JsmsError | None) -> None:
        """The job's last attempt may have reached the API: an error that says so, or (None)
        a run found interrupted mid-submission. The window is measured from the first time."""
        metrics().uncertain.labels(job.op).inc()
        error = exc.to_dict() if exc else {"code": None, "message": "interrupted mid-submission"}
        self.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                set={"uncertain": "1", "error": json.dumps(error)},
                stamp="uncertain_since",
            )
        )

    def blocked(self, job: JobRecord, exc: AuditPending) -> None:
        """An audit signq did not submit is pending: the account waits, its head job probed
        on back-off."""
        s = self.settings
        self.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to="parked",
                set={"waiting_for": "external_audit", "error": json.dumps(exc.to_dict())},
                lease_clear=True,
                block={
                    "event": events.make(
                        "account.blocked_external", job.account, job_id=job.id, error=_error(exc)
                    ),
                    "initial_ms": int(s.probe_backoff_initial * 1000),
                    "max_ms": int(s.probe_backoff_max * 1000),
                },
            )
        )

    def paused(self, job: JobRecord, reason: str, exc: JsmsError | None = None) -> None:
        """The account's credentials were refused: it is paused, its jobs wait."""
        error = exc.to_dict() if exc else {"code": None, "message": reason}
        self.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to="parked",
                set={"waiting_for": "account_paused", "error": json.dumps(error)},
                lease_clear=True,
                wait=True,
                pause={
                    "reason": reason,
                    "event": events.make(
                        "account.paused",
                        job.account,
                        reason=reason,
                        job_id=job.id,
                        error=_error(exc) if exc else None,
                    ),
                },
            )
        )

    def rescheduled(
        self, job: JobRecord, error: dict[str, Any], delay_ms: int, *, why: str, uncertain: bool
    ) -> None:
        """Run again in ``delay_ms``, owned by the outbox meanwhile; the first failure's time
        is kept for the retry budget."""
        self.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to="queued",
                set={
                    "waiting_for": why,
                    "error": json.dumps(error),
                    "uncertain": "1" if uncertain else "",
                },
                stamp="first_failure_at",
                retry_in=delay_ms,
                lease_clear=True,
            )
        )
        metrics().retries.labels(job.op).inc()

    def failed(self, job: JobRecord, exc: JsmsError | None, message: str | None = None) -> None:
        """The job is over without success: ``job.failed``; its gate goes on."""
        error: dict[str, Any] = exc.to_dict() if exc else {"code": None}
        if message:
            error["message"] = message
        self.apply(
            Change(
                id=job.id,
                from_=["submitting", "queued", "parked"],
                to="failed",
                set={"error": json.dumps(error), "waiting_for": ""},
                lease_clear=True,
                unpark=True,
                release=job.gated,
                terminal=self.settings.retention.job_ms,
                events=[
                    events.make(
                        "job.failed",
                        job.account,
                        job_id=job.id,
                        op=job.op,
                        sign=job.sign,
                        sign_id=job.sign_id,
                        error={"code": error.get("code"), "message": error.get("message")},
                    )
                ],
            )
        )
        metrics().jobs_finished.labels(job.op, "failed").inc()
        log.warning("job_failed", error=error.get("message"))

    def deleted(self, job: JobRecord, sign_id: int) -> None:
        """A delete went through: ``signature.deleted``; an audit of that signature will never
        resolve, so the job holding the gate for it is over too."""
        retention = self.settings.retention.job_ms
        self.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to="deleted",
                lease_clear=True,
                untrack=sign_id,
                terminal=retention,
                events=[
                    events.make(
                        "signature.deleted",
                        job.account,
                        job_id=job.id,
                        sign_id=sign_id,
                        reason="deleted by job",
                    )
                ],
            )
        )
        holder = text(self.store.redis.get(self.store.keys.gate(job.account)))
        if holder and self.store.redis.hget(self.store.keys.job(holder), "sign_id") == str(sign_id):
            self.apply(
                Change(
                    id=holder,
                    from_=["pending_audit", "unconfirmed"],
                    to="deleted",
                    release=True,
                    terminal=retention,
                )
            )
        metrics().jobs_finished.labels(job.op, "deleted").inc()

    def skipped(self, job: JobRecord, sign_id: int, why: str) -> None:
        """Cleanup leaves this signature alone, says why, and counts it as no failure."""
        self.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to="cancelled",
                lease_clear=True,
                set={"error": json.dumps({"code": None, "message": f"skipped by cleanup: {why}"})},
                terminal=self.settings.retention.job_ms,
            )
        )
        self.store.redis.hset(
            self.store.keys.signature(job.account, sign_id), "cleanup_skipped", why
        )
        metrics().jobs_finished.labels(job.op, "skipped").inc()

    def queried(self, job: JobRecord, state: str, result: dict[str, Any]) -> None:
        """A query's answer, kept in the job's result."""
        self.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to=state,
                lease_clear=True,
                set={"result": json.dumps(result, ensure_ascii=False)},
                terminal=self.settings.retention.job_ms,
            )
        )
        metrics().jobs_finished.labels(job.op, state).inc()


def _error(exc: JsmsError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message}
