"""Running a job against the API and turning every outcome into one atomic state change.

Outcomes of a submission (create or modify), whose job holds its account's audit gate:

- accepted: pending audit, tracked; the gate stays held until the audit resolves.
- permanent error: failed; the gate goes to the account's next parked job.
- transient error: rescheduled with back-off (``RetryLater``) within the retry budget, then failed.
- auth error: the account is paused; its jobs wait, none fails.
- 50103 with nothing uncertain behind it: an audit signq did not submit is pending; the account
  is marked blocked and the job, still at the head, is probed on a back-off schedule.
- outcome unknown: retried once at once through the gate. Success means the first attempt took
  no effect; 50103 means it did (a modify is then pending; a create is ``unconfirmed``, with
  the gate held until an operator or a callback settles it, or the hold ends).
"""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog

from worker import events
from worker.accounts import AccountError, Accounts
from worker.jobs import Enqueue, JobRecord, Jobs, retention_ms, submitted_change
from worker.jsms.client import Credentials, JsmsClient
from worker.jsms.errors import (
    AuditPending,
    AuthError,
    InvalidSignId,
    JsmsError,
    OutcomeUnknown,
    RateLimited,
    SignatureInUse,
)
from worker.jsms.models import Image, SignRequest, Status
from worker.metrics import metrics
from worker.store import Change, Store, now_ms, text

log = structlog.get_logger(__name__)
_STATE_OF_STATUS = {
    Status.PENDING: "pending_audit",
    Status.APPROVED: "approved",
    Status.REJECTED: "rejected",
}


class RetryLater(Exception):
    """Run the job again after ``delay_ms``; its record already says why."""

    def __init__(self, reason: str, delay_ms: int) -> None:
        super().__init__(reason)
        self.delay_ms = delay_ms


class Leases:
    """Keeps the in-flight leases of this process's running jobs alive from one thread.

    A job being executed holds a short lease in Redis; if its process dies, the lease runs out
    and the reaper sends the job again. The lease is renewed while the job runs, however long
    its API call takes.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def hold(self, job_id: str) -> Iterator[None]:
        """Renew the job's lease until the block ends."""
        with self._lock:
            self._held.add(job_id)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._renew, name="signq-leases", daemon=True
                )
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._held.discard(job_id)

    def _renew(self) -> None:
        period = self.store.settings.lease_seconds / 3
        stop = threading.Event()
        while not stop.wait(period):
            with self._lock:
                held = list(self._held)
            if not held:
                continue
            deadline = now_ms() + int(self.store.settings.lease_seconds * 1000)
            try:
                self.store.redis.zadd(
                    self.store.keys.inflight(), dict.fromkeys(held, deadline), xx=True
                )
            except Exception:
                log.warning("lease_renewal_failed", jobs=len(held), exc_info=True)


class Pipeline:
    """Executes jobs; broker-free so tests drive it directly."""

    def __init__(
        self,
        store: Store,
        accounts: Accounts,
        jobs: Jobs,
        client: JsmsClient,
        enqueue: Enqueue,
    ) -> None:
        self.store = store
        self.settings = store.settings
        self.accounts = accounts
        self.jobs = jobs
        self.client = client
        self.enqueue = enqueue
        self.leases = Leases(store)

    def run(self, job_id: str) -> str:
        """Run one job if it may run now; returns what happened, in a word."""
        s = self.settings
        reply = self.store.run(
            "start",
            job_id,
            now_ms() + int(s.lease_seconds * 1000),
            s.rate_limit,
            s.rate_burst,
            s.account_rate_limit,
            s.account_rate_burst,
        )
        kind = str(reply[0])
        if kind == "throttled":
            raise RetryLater("rate limit", int(reply[1]))
        if kind == "no_account":
            return self._account_gone(job_id)
        if kind != "run":
            log.info("job_not_run", job_id=job_id, why=kind)
            return kind
        previous, app_key, stored_secret, snapshot = (str(x) for x in reply[1:5])
        job = JobRecord.from_hash(json.loads(snapshot))
        with structlog.contextvars.bound_contextvars(
            job_id=job.id, account=job.account, op=job.op, sign_id=job.sign_id
        ):
            try:
                creds = self.accounts.credentials(job.account, app_key, stored_secret)
            except AccountError as exc:
                return self._pause(job, str(exc))
            if job.gated and job.attempts == 0:
                metrics().gate_wait.observe(max(0.0, (now_ms() - job.created_at) / 1000))
            with self.leases.hold(job.id):
                if job.gated:
                    return self._submit(job, creds, previous)
                if job.op == "delete":
                    return self._delete(job, creds)
                return self._query(job, creds)

    def _submit(self, job: JobRecord, creds: Credentials, previous: str) -> str:
        # A job found mid-submission was interrupted: its last attempt may have reached the API.
        uncertain = job.uncertain or previous == "submitting"
        since = job.ms("uncertain_since") or job.ms("attempt_at") or now_ms()
        if uncertain and now_ms() - since > self.settings.uncertain_retry_window * 1000:
            # Too long ago to trust 50103 as proof: the audit may have resolved since.
            return self._took_effect(job, creds, "the uncertain attempt is too old to retry")
        request = self._request(job)
        if request is None:
            return self._fail(job, None, "an audit image expired from Redis before submission")
        while True:
            try:
                if job.op == "create":
                    sign_id = self.client.create(creds, request)
                else:
                    sign_id = self.client.modify(creds, _need(job.sign_id), request)
            except OutcomeUnknown as exc:
                if uncertain:
                    return self._transient(job, exc, uncertain=True)
                # Retry once, at once, through the gate this job holds: the answer tells.
                uncertain = True
                self._mark_uncertain(job, exc)
                log.warning("submission_outcome_unknown", error=str(exc))
                continue
            except JsmsError as exc:
                return self._refused(job, creds, exc, uncertain=uncertain)
            return self._accepted(job, sign_id)

    def _refused(
        self, job: JobRecord, creds: Credentials, exc: JsmsError, *, uncertain: bool
    ) -> str:
        """The API answered a submission with an error."""
        if isinstance(exc, AuditPending):
            if uncertain:
                return self._took_effect(job, creds, "a retry answered 50103")
            return self._blocked(job, exc)
        if isinstance(exc, InvalidSignId) and uncertain and job.op == "modify":
            return self._modify_resolved(job, creds, exc)
        if isinstance(exc, AuthError):
            return self._pause(job, str(exc), exc)
        if exc.retryable:
            return self._transient(job, exc, uncertain=uncertain)
        return self._fail(job, exc)

    def _request(self, job: JobRecord) -> SignRequest | None:
        images = []
        for sha, name in job.images:
            data = self.jobs.image(sha)
            if data is None:
                return None
            images.append(Image(data, name))
        return SignRequest(job.sign or "", tuple(images), job.type, job.remark)

    def _accepted(self, job: JobRecord, sign_id: int) -> str:
        self.store.apply(submitted_change(job, sign_id, self.settings.poll_initial_seconds))
        log.info("signature_submitted", sign_id=sign_id)
        return "pending_audit"

    def _took_effect(self, job: JobRecord, creds: Credentials, why: str) -> str:
        if job.op == "modify":
            return self._accepted(job, _need(job.sign_id))
        hold = now_ms() + int(self.settings.unconfirmed_hold_hours * 3_600_000)
        error = {
            "code": 50103,
            "message": f"create outcome unknown: {why}; settle it with "
            "`signq jobs confirm` or `signq jobs abandon`",
        }
        self.store.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to="unconfirmed",
                set={"error": json.dumps(error), "waiting_for": "operator_or_callback"},
                lease_clear=True,
                unconfirmed_until=hold,
                events=[
                    events.make(
                        "job.unconfirmed", job.account, job_id=job.id, sign=job.sign, reason=why
                    )
                ],
            )
        )
        log.warning("job_unconfirmed", why=why)
        return "unconfirmed"

    def _modify_resolved(self, job: JobRecord, creds: Credentials, exc: InvalidSignId) -> str:
        """A retried modify refused as 'not rejected': the first one went through if its audit
        has already moved on."""
        try:
            signature = self.client.query(creds, _need(job.sign_id))
        except JsmsError:
            return self._fail(job, exc)
        if signature.status is Status.REJECTED:
            return self._fail(job, exc)
        return self._accepted(job, signature.sign_id)

    def _mark_uncertain(self, job: JobRecord, exc: OutcomeUnknown) -> None:
        metrics().uncertain.labels(job.op).inc()
        self.store.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                set={
                    "uncertain": "1",
                    "uncertain_since": now_ms(),
                    "error": json.dumps(exc.to_dict()),
                },
            )
        )

    def _blocked(self, job: JobRecord, exc: AuditPending) -> str:
        s = self.settings
        self.store.apply(
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
        log.warning("account_blocked_external")
        return "blocked"

    def _pause(self, job: JobRecord, reason: str, exc: JsmsError | None = None) -> str:
        error = exc.to_dict() if exc else {"code": None, "message": reason}
        self.store.apply(
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
        log.warning("account_paused", reason=reason)
        return "paused"

    def _transient(self, job: JobRecord, exc: JsmsError, *, uncertain: bool) -> str:
        now = now_ms()
        first = job.ms("first_failure_at") or now
        if now - first > self.settings.retry_budget_seconds * 1000:
            return self._fail(job, exc, "gave up after the retry budget: " + str(exc))
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            delay = int(exc.retry_after * 1000)
        else:
            delay = _backoff(
                job.attempts, self.settings.retry_backoff_min, self.settings.retry_backoff_max
            )
        self.store.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to="queued",
                set={
                    "waiting_for": "retry",
                    "error": json.dumps(exc.to_dict()),
                    "first_failure_at": first,
                    "uncertain": "1" if uncertain else "",
                },
                lease_clear=True,
            )
        )
        metrics().retries.labels(job.op).inc()
        log.info("job_retry_scheduled", delay_ms=delay, error=str(exc))
        raise RetryLater(str(exc), delay)

    def _fail(self, job: JobRecord, exc: JsmsError | None, message: str | None = None) -> str:
        error: dict[str, Any] = exc.to_dict() if exc else {"code": None}
        if message:
            error["message"] = message
        applied = self.store.apply(
            Change(
                id=job.id,
                from_=["submitting", "queued", "parked"],
                to="failed",
                set={"error": json.dumps(error), "waiting_for": ""},
                lease_clear=True,
                release=job.gated,
                terminal=retention_ms(self.settings.job_retention_days),
                events=[
                    events.make(
                        "job.failed",
                        job.account,
                        job_id=job.id,
                        op=job.op,
                        sign=job.sign,
                        sign_id=job.sign_id,
                        error=_short(error),
                    )
                ],
            )
        )
        metrics().jobs_finished.labels(job.op, "failed").inc()
        log.warning("job_failed", error=error.get("message"))
        if applied.next_job:
            self.enqueue([applied.next_job])
        return "failed"

    def give_up(self, job_id: str, reason: str) -> str:
        """Fail a job that cannot be run, whatever state short of the API it is in."""
        record = self.jobs.get(job_id)
        if record is None or record.terminal:
            return "missing" if record is None else record.state
        return self._fail(record, None, reason)

    def _account_gone(self, job_id: str) -> str:
        record = self.jobs.get(job_id)
        if record is None:
            return "missing"
        return self._fail(record, None, f"account {record.account} no longer exists")

    def _delete(self, job: JobRecord, creds: Credentials) -> str:
        sign_id = _need(job.sign_id)
        cleanup = job.raw.get("cleanup") == "1"
        try:
            if cleanup:
                # Looked at again just before: it may have come into use since it was chosen.
                signature = self.client.query(creds, sign_id)
                if signature.use_status == 1 or signature.status is Status.PENDING:
                    why = "in use" if signature.use_status == 1 else "its audit is pending"
                    return self._skip(job, sign_id, why)
            self.client.delete(creds, sign_id)
        except SignatureInUse as exc:
            if cleanup:
                return self._skip(job, sign_id, f"in use or the default signature ({exc.code})")
            return self._fail(job, exc)
        except JsmsError as exc:
            return self._api_error(job, exc)
        retention = retention_ms(self.settings.job_retention_days)
        self.store.apply(
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
        self._release_holder_of(job.account, sign_id, retention)
        metrics().jobs_finished.labels(job.op, "deleted").inc()
        return "deleted"

    def _api_error(self, job: JobRecord, exc: JsmsError) -> str:
        """A query or delete refused: pause on auth, reschedule if transient, else fail."""
        if isinstance(exc, AuthError):
            return self._pause(job, str(exc), exc)
        if exc.retryable:
            return self._transient(job, exc, uncertain=False)
        return self._fail(job, exc)

    def _skip(self, job: JobRecord, sign_id: int, why: str) -> str:
        """Cleanup leaves this signature alone, says why, and counts it as no failure."""
        message = f"skipped by cleanup: {why}"
        self.store.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to="cancelled",
                lease_clear=True,
                set={"error": json.dumps({"code": None, "message": message})},
                terminal=retention_ms(self.settings.job_retention_days),
            )
        )
        self.store.redis.hset(
            self.store.keys.signature(job.account, sign_id), "cleanup_skipped", why
        )
        metrics().jobs_finished.labels(job.op, "skipped").inc()
        log.info("cleanup_skipped", why=why)
        return "skipped"

    def _release_holder_of(self, account: str, sign_id: int, retention: int) -> None:
        """A deleted signature's audit will never resolve: its job's gate moves on."""
        holder = text(self.store.redis.get(self.store.keys.gate(account)))
        if not holder:
            return
        record = self.jobs.get(holder)
        if record is None or record.sign_id != sign_id:
            return
        applied = self.store.apply(
            Change(
                id=record.id,
                from_=["pending_audit", "unconfirmed"],
                to="deleted",
                release=True,
                terminal=retention,
            )
        )
        if applied.next_job:
            self.enqueue([applied.next_job])

    def _query(self, job: JobRecord, creds: Credentials) -> str:
        try:
            signature = self.client.query(creds, _need(job.sign_id))
        except JsmsError as exc:
            return self._api_error(job, exc)
        result: dict[str, Any] = {
            "sign_id": signature.sign_id,
            "sign": signature.sign,
            "status": int(signature.status),
            "use_status": signature.use_status,
            "is_default": signature.is_default,
        }
        state = _STATE_OF_STATUS[signature.status]
        self.store.apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to=state,
                lease_clear=True,
                set={"result": json.dumps(result, ensure_ascii=False)},
                terminal=retention_ms(self.settings.job_retention_days),
            )
        )
        metrics().jobs_finished.labels(job.op, state).inc()
        return state


def _need(sign_id: int | None) -> int:
    if sign_id is None:
        raise ValueError("job has no sign_id")
    return sign_id


def _backoff(attempts: int, low: float, high: float) -> int:
    """Exponential back-off with full jitter, in ms."""
    ceiling = min(high, low * 2 ** max(0, attempts - 1))
    return int(1000 * random.uniform(low, max(low, ceiling)))  # noqa: S311 - jitter


def _error(exc: JsmsError) -> dict[str, Any]:
    return {"code": exc.code, "message": exc.message}


def _short(error: dict[str, Any]) -> dict[str, Any]:
    return {"code": error.get("code"), "message": error.get("message")}
