"""Running a job against the API and turning every outcome into one atomic state change.

Outcomes of a submission (create or modify), whose job holds its account's audit gate:

- accepted: pending audit, tracked; the gate stays held until the audit resolves. The sign id
  is logged as soon as it arrives and recorded whatever happens to Redis or to the job
  meanwhile: a late answer settles its job (adopted, as a callback would).
- permanent error: failed; the gate goes to the account's next parked job.
- transient error: rescheduled with back-off (``RetryLater``) within the retry budget, then failed.
- auth error: the account is paused; its jobs wait, none fails.
- 50103 with nothing uncertain behind it: an audit signq did not submit is pending; the account
  is marked blocked and the job, still at the head, is probed on a back-off schedule.
- outcome unknown: retried through the gate on a short schedule while the uncertain window
  lasts, the only time a retry proves anything. Success means the first attempt took no
  effect; 50103 means it did (a modify is then pending; a create is ``unconfirmed``). A create
  still unknown at the end of the window is ``unconfirmed`` too. An unconfirmed create waits
  for a callback, a late answer or an operator, and hands the gate on at once: the account's
  next job probes the API (50103: the unknown audit is pending, the account waits blocked).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import structlog

from worker import tracing
from worker.accounts import Accounts
from worker.attempt import (
    Attempt,
    RetryLater,
    backoff,
    need_sign_id,
    uncertain_delay,
    undecided,
)
from worker.clock import SYSTEM_CLOCK, Clock
from worker.dispatch import Dispatcher
from worker.errors import AccountError, SecretKeyError
from worker.jobs import Jobs
from worker.jsms.client import JsmsClient
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
from worker.leases import Leases
from worker.metrics import metrics
from worker.records import JobRecord
from worker.store import Claim, Store
from worker.transitions import Transitions

log = structlog.get_logger(__name__)
_STATE_OF_STATUS = {
    Status.PENDING: "pending_audit",
    Status.APPROVED: "approved",
    Status.REJECTED: "rejected",
}
# Uncertain retries wait at most this long in the worker thread; longer waits are rescheduled.
_SLEEP_IN_RUN_MAX = 2.0
# A job whose secret this worker cannot open waits this long for a worker that can.
KEY_MISSING_RETRY_MS = 60_000
# Queried to learn whether the API answers at all: ids start far above this one.
_HEALTH_SIGN_ID = 1


class Pipeline:
    """Executes jobs; broker-free so tests drive it directly. Each outcome below is one named
    transition (``worker.transitions``)."""

    def __init__(
        self,
        store: Store,
        accounts: Accounts,
        jobs: Jobs,
        client: JsmsClient,
        dispatch: Dispatcher,
        *,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.store = store
        self.settings = store.settings
        self.accounts = accounts
        self.jobs = jobs
        self.client = client
        self.dispatch = dispatch
        self.to = Transitions(store, dispatch, clock=clock)
        self.leases = Leases(store)
        # Called with an account once one of its creates is unconfirmed: results pushed for it
        # before then are matched (the tracker's ``settle_unconfirmed``).
        self.on_unconfirmed: Callable[[str], object] = lambda _account: None

    def run(self, job_id: str, account: str | None = None) -> str:
        """Run one job if it may run now; returns what happened, in a word."""
        s = self.settings
        claim = self.store.start(job_id, int(s.lease_seconds * 1000), s.rate_limits, account)
        if claim.next_job:
            # Settled after its account's gate was handed to it: the gate went on at once.
            self.dispatch.jobs([claim.next_job])
        if claim.outcome == "throttled":
            raise RetryLater("rate limit", claim.wait_ms)
        if claim.outcome == "no_account":
            return self._account_gone(job_id)
        if claim.outcome != "run":
            log.info("job_not_run", job_id=job_id, why=claim.outcome)
            return claim.outcome
        job = JobRecord.from_hash(claim.snapshot)
        with (
            structlog.contextvars.bound_contextvars(
                job_id=job.id, account=job.account, op=job.op, sign_id=job.sign_id
            ),
            tracing.span(
                "signq.job.run",
                parent=job.trace,
                job_id=job.id,
                account=job.account,
                op=job.op,
                sign_id=job.sign_id,
                attempt=job.attempts + 1,
            ) as span,
        ):
            outcome = self._claimed(job, claim)
            tracing.annotate(span, outcome=outcome)
            return outcome

    def _claimed(self, job: JobRecord, claim: Claim) -> str:
        try:
            creds = self.accounts.credentials(job.account, claim.app_key, claim.stored_secret)
        except SecretKeyError as exc:
            # This worker's key is wrong, not the tenant: the job waits for one that can.
            log.error("secret_key_cannot_open_secret", error=str(exc))
            error = {"code": None, "message": str(exc)}
            self.to.rescheduled(job, error, KEY_MISSING_RETRY_MS, why="secret_key", uncertain=False)
            raise RetryLater(str(exc), KEY_MISSING_RETRY_MS) from None
        except AccountError as exc:
            return self._pause(job, str(exc))
        attempt = Attempt(
            job,
            creds,
            claim.previous,
            claim.clock_ms,
            self.to.clock,
            self.to.clock(),
            claim.probing,
        )
        return self._execute(attempt)

    def _execute(self, attempt: Attempt) -> str:
        job = attempt.job
        if job.gated and job.attempts == 0:
            metrics().gate_wait.observe(max(0.0, (attempt.started_ms - job.created_at) / 1000))
        with self.leases.hold(job.id):
            if job.gated:
                return self._submit(attempt)
            if job.op == "delete":
                return self._delete(attempt)
            return self._query(attempt)

    def _submit(self, attempt: Attempt) -> str:
        job = attempt.job
        # A job found mid-submission was interrupted: its last attempt may have reached the API.
        uncertain = job.uncertain or attempt.previous == "submitting"
        if uncertain and not job.uncertain:
            self.to.uncertain(job, None)
        request = self._request(job)
        if request is None:
            return self._fail(job, None, "an audit image expired from Redis before submission")
        if attempt.probing and not uncertain:
            # After a create with no decisive answer, submit only to an API that answers at all:
            # a side-effect-free query first, so an API that hangs costs no job its certainty.
            unwell = self._api_unwell(attempt)
            if unwell is not None:
                return self._transient(attempt, unwell, uncertain=False)
        return self._submit_until_decided(attempt, request, uncertain=uncertain)

    def _submit_until_decided(
        self, attempt: Attempt, request: SignRequest, *, uncertain: bool
    ) -> str:
        """Submit; while the outcome is unknown, retry on the short schedule inside the window,
        the only time a retry proves anything."""
        job = attempt.job
        since = job.ms("uncertain_since") or job.ms("attempt_at") or attempt.started_ms
        window_ms = int(self.settings.uncertain_retry_window * 1000)
        retries = 0
        while True:
            if uncertain and attempt.now_ms() - since > window_ms:
                # Too long ago to trust 50103 as proof: the audit may have resolved since.
                return self._took_effect(attempt, undecided(attempt))
            answer = self._send(attempt, request)
            if isinstance(answer, int):
                return self._accepted(attempt, answer)
            if isinstance(answer, OutcomeUnknown) and not uncertain:
                uncertain, since = True, attempt.now_ms()
                self.to.uncertain(job, answer)
                log.warning("submission_outcome_unknown", error=str(answer))
            elif not self._undecided_by(attempt, answer, uncertain=uncertain):
                return self._refused(attempt, answer, uncertain=uncertain)
            # No decisive answer while the outcome is unknown: try again soon, inside the window.
            delay = uncertain_delay(retries, answer, self.settings.uncertain_retry_window)
            retries += 1
            if attempt.now_ms() + delay * 1000 - since > window_ms:
                return self._took_effect(attempt, undecided(attempt))
            if delay > _SLEEP_IN_RUN_MAX:
                return self._transient(attempt, answer, uncertain=True, delay_ms=int(delay * 1000))
            self.to.clock.sleep(delay)

    def _send(self, attempt: Attempt, request: SignRequest) -> int | JsmsError:
        """One submission: the sign id, or the error the API (or the way to it) answered."""
        try:
            if attempt.job.op == "create":
                return self.client.create(attempt.creds, request)
            return self.client.modify(attempt.creds, need_sign_id(attempt.job.sign_id), request)
        except JsmsError as exc:
            return exc

    def _undecided_by(self, attempt: Attempt, error: JsmsError, *, uncertain: bool) -> bool:
        """Whether an error leaves an uncertain submission's outcome as unknown as before."""
        if not uncertain:
            return False
        if isinstance(error, OutcomeUnknown):
            return True
        if isinstance(error, AuditPending):
            # In probe mode an earlier unconfirmed create's audit may be the pending one; a
            # modify is decided all the same by its signature's status.
            modify_taken = attempt.job.op == "modify" and self._modify_took_effect(attempt)
            return attempt.probing and not modify_taken
        return error.retryable and not isinstance(error, AuthError)

    def _refused(self, attempt: Attempt, exc: JsmsError, *, uncertain: bool) -> str:
        """The API answered a submission with an error."""
        job = attempt.job
        if isinstance(exc, AuditPending):
            if uncertain:
                return self._took_effect(attempt, "a retry answered 50103")
            self.to.blocked(job, exc)
            log.warning("account_blocked_external")
            return "blocked"
        if isinstance(exc, InvalidSignId) and uncertain and job.op == "modify":
            return self._modify_resolved(attempt, exc)
        if isinstance(exc, AuthError):
            return self._pause(job, str(exc), exc)
        if exc.retryable:
            return self._transient(attempt, exc, uncertain=uncertain)
        return self._fail(job, exc)

    def _request(self, job: JobRecord) -> SignRequest | None:
        images = []
        for sha, name in job.images:
            data = self.jobs.image(sha)
            if data is None:
                return None
            images.append(Image(data, name))
        return SignRequest(job.sign or "", tuple(images), job.type, job.remark)

    def _accepted(self, attempt: Attempt, sign_id: int) -> str:
        job = attempt.job
        log.info("submission_accepted_by_api", api_sign_id=sign_id)
        applied = self.to.accepted(job, sign_id)
        if applied.applied:
            if applied.previous != "submitting":
                log.warning("late_answer_adopted", api_sign_id=sign_id, was=applied.previous)
            log.info("signature_submitted", sign_id=sign_id)
            return "pending_audit"
        log.error("late_answer_for_finished_job", api_sign_id=sign_id, state=applied.previous)
        self.to.tracked_after_the_end(job, sign_id)
        return applied.previous or "missing"

    def _took_effect(self, attempt: Attempt, why: str) -> str:
        job = attempt.job
        if job.op == "modify":
            return self._accepted(attempt, need_sign_id(job.sign_id))
        applied = self.to.unconfirmed(job, why)
        if not applied.applied:
            return applied.previous
        log.warning("job_unconfirmed", why=why)
        self.on_unconfirmed(job.account)
        return "unconfirmed"

    def _modify_resolved(self, attempt: Attempt, exc: InvalidSignId) -> str:
        """A retried modify refused as 'not rejected': the first one went through if its audit
        has already moved on."""
        job = attempt.job
        try:
            signature = self.client.query(attempt.creds, need_sign_id(job.sign_id))
        except JsmsError:
            return self._fail(job, exc)
        if signature.status is Status.REJECTED:
            return self._fail(job, exc)
        return self._accepted(attempt, signature.sign_id)

    def _api_unwell(self, attempt: Attempt) -> JsmsError | None:
        """The transient error of a query of a sign id nobody has, or None if the API gave
        any real answer."""
        try:
            self.client.query(attempt.creds, _HEALTH_SIGN_ID)
        except JsmsError as exc:
            return exc if exc.retryable else None
        return None

    def _modify_took_effect(self, attempt: Attempt) -> bool:
        """Whether an uncertain modify went through, from the signature itself: it was
        rejected, so pending audit means the modify was taken."""
        try:
            signature = self.client.query(attempt.creds, need_sign_id(attempt.job.sign_id))
        except JsmsError:
            return False
        return signature.status is Status.PENDING

    def _pause(self, job: JobRecord, reason: str, exc: JsmsError | None = None) -> str:
        self.to.paused(job, reason, exc)
        log.warning("account_paused", reason=reason)
        return "paused"

    def _transient(
        self,
        attempt: Attempt,
        exc: JsmsError,
        *,
        uncertain: bool,
        delay_ms: int | None = None,
    ) -> str:
        job = attempt.job
        tracing.annotate(tracing.current(), jsms_error_code=exc.code, error=str(exc))
        first = job.ms("first_failure_at") or attempt.now_ms()
        if attempt.now_ms() - first > self.settings.retry_budget_seconds * 1000:
            return self._fail(job, exc, "gave up after the retry budget: " + str(exc))
        if delay_ms is not None:
            delay = delay_ms
        elif isinstance(exc, RateLimited) and exc.retry_after is not None:
            delay = int(exc.retry_after * 1000)
        else:
            delay = backoff(
                job.attempts, self.settings.retry_backoff_min, self.settings.retry_backoff_max
            )
        self.to.rescheduled(job, exc.to_dict(), delay, why="retry", uncertain=uncertain)
        log.info("job_retry_scheduled", delay_ms=delay, error=str(exc))
        raise RetryLater(str(exc), delay)

    def _fail(self, job: JobRecord, exc: JsmsError | None, message: str | None = None) -> str:
        if exc is not None:
            tracing.annotate(tracing.current(), jsms_error_code=exc.code, error=str(exc))
        self.to.failed(job, exc, message)
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

    def _delete(self, attempt: Attempt) -> str:
        job, creds = attempt.job, attempt.creds
        sign_id = need_sign_id(job.sign_id)
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
            return self._api_error(attempt, exc)
        self.to.deleted(job, sign_id)
        return "deleted"

    def _api_error(self, attempt: Attempt, exc: JsmsError) -> str:
        """A query or delete refused: pause on auth, reschedule if transient, else fail."""
        if isinstance(exc, AuthError):
            return self._pause(attempt.job, str(exc), exc)
        if exc.retryable:
            return self._transient(attempt, exc, uncertain=False)
        return self._fail(attempt.job, exc)

    def _skip(self, job: JobRecord, sign_id: int, why: str) -> str:
        self.to.skipped(job, sign_id, why)
        log.info("cleanup_skipped", why=why)
        return "skipped"

    def _query(self, attempt: Attempt) -> str:
        job = attempt.job
        try:
            signature = self.client.query(attempt.creds, need_sign_id(job.sign_id))
        except JsmsError as exc:
            return self._api_error(attempt, exc)
        result: dict[str, Any] = {
            "sign_id": signature.sign_id,
            "sign": signature.sign,
            "status": int(signature.status),
            "use_status": signature.use_status,
            "is_default": signature.is_default,
        }
        state = _STATE_OF_STATUS[signature.status]
        self.to.queried(job, state, result)
        return state
