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

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
import structlog

from worker import events
from worker.accounts import AccountError, Accounts, SecretKeyError
from worker.jobs import Enqueue, JobRecord, Jobs, retention_ms, submitted_change
from worker.jsms.client import JsmsClient
from worker.jsms.credentials import Credentials
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
from worker.store import Applied, Change, Store, text

log = structlog.get_logger(__name__)
_STATE_OF_STATUS = {
    Status.PENDING: "pending_audit",
    Status.APPROVED: "approved",
    Status.REJECTED: "rejected",
}
# States from which a submission the API accepted is still recorded: whatever a second run
# (after a lost lease) or the uncertain path did meanwhile, a known sign id settles its job.
_ACCEPTABLE_FROM = ["submitting", "queued", "parked", "unconfirmed"]
# How long a run keeps trying to record an outcome while Redis does not answer.
RECORD_PATIENCE_SECONDS = 600.0
# Uncertain retries wait at most this long in the worker thread; longer waits are rescheduled.
_SLEEP_IN_RUN_MAX = 2.0
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
# A job whose secret this worker cannot open waits this long for a worker that can.
KEY_MISSING_RETRY_MS = 60_000
# Queried to learn whether the API answers at all: ids start far above this one.
_HEALTH_SIGN_ID = 1


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
        lease_ms = int(self.store.settings.lease_seconds * 1000)
        stop = threading.Event()
        while not stop.wait(lease_ms / 3000):
            with self._lock:
                held = list(self._held)
            if not held:
                continue
            try:
                self.store.run("renew", lease_ms, *held)
            except Exception:
                log.warning("lease_renewal_failed", jobs=len(held), exc_info=True)


@dataclass(frozen=True)
class Attempt:
    """One run of a job: its record as claimed, and Redis's clock at the claim."""

    job: JobRecord
    creds: Credentials
    previous: str
    started_ms: int
    clock: Callable[[], float]
    _started: float
    # An unconfirmed create of the account may have an audit pending: a 50103 is not proof.
    probing: bool = False

    def now_ms(self) -> int:
        """Redis's clock now, projected from the claim by this host's monotonic clock."""
        return self.started_ms + int((self.clock() - self._started) * 1000)


class Pipeline:
    """Executes jobs; broker-free so tests drive it directly."""

    def __init__(
        self,
        store: Store,
        accounts: Accounts,
        jobs: Jobs,
        client: JsmsClient,
        enqueue: Enqueue,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = store.settings
        self.accounts = accounts
        self.jobs = jobs
        self.client = client
        self.enqueue = enqueue
        self.sleep = sleep
        self.clock = clock
        self.leases = Leases(store)
        # Called with an account once one of its creates is unconfirmed: results pushed for it
        # before then are matched (the tracker's ``settle_unconfirmed``).
        self.on_unconfirmed: Callable[[str], object] = lambda _account: None

    def run(self, job_id: str) -> str:
        """Run one job if it may run now; returns what happened, in a word."""
        s = self.settings
        reply = self.store.run(
            "start",
            job_id,
            int(s.lease_seconds * 1000),
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
        previous, app_key, stored_secret, snapshot, clock, probing = (str(x) for x in reply[1:7])
        job = JobRecord.from_hash(json.loads(snapshot))
        with structlog.contextvars.bound_contextvars(
            job_id=job.id, account=job.account, op=job.op, sign_id=job.sign_id
        ):
            try:
                creds = self.accounts.credentials(job.account, app_key, stored_secret)
            except SecretKeyError as exc:
                return self._key_missing(job, exc)
            except AccountError as exc:
                return self._pause(job, str(exc))
            attempt = Attempt(
                job, creds, previous, int(clock), self.clock, self.clock(), probing == "1"
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
        request = self._request(job)
        if request is None:
            return self._fail(job, None, "an audit image expired from Redis before submission")
        if uncertain and not job.uncertain:
            self._mark_uncertain(job, None)
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
                return self._took_effect(attempt, _undecided(attempt))
            answer = self._send(attempt, request)
            if isinstance(answer, int):
                return self._accepted(attempt, answer)
            if isinstance(answer, OutcomeUnknown) and not uncertain:
                uncertain, since = True, attempt.now_ms()
                self._mark_uncertain(job, answer)
                log.warning("submission_outcome_unknown", error=str(answer))
            elif not self._undecided_by(attempt, answer, uncertain=uncertain):
                return self._refused(attempt, answer, uncertain=uncertain)
            # No decisive answer while the outcome is unknown: try again soon, inside the window.
            delay = self._uncertain_delay(retries, answer)
            retries += 1
            if attempt.now_ms() + delay * 1000 - since > window_ms:
                return self._took_effect(attempt, _undecided(attempt))
            if delay > _SLEEP_IN_RUN_MAX:
                return self._transient(attempt, answer, uncertain=True, delay_ms=int(delay * 1000))
            self.sleep(delay)

    def _send(self, attempt: Attempt, request: SignRequest) -> int | JsmsError:
        """One submission: the sign id, or the error the API (or the way to it) answered."""
        try:
            if attempt.job.op == "create":
                return self.client.create(attempt.creds, request)
            return self.client.modify(attempt.creds, _need(attempt.job.sign_id), request)
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

    def _uncertain_delay(self, retries: int, error: JsmsError) -> float:
        """The short schedule of uncertain retries: at once, then doubling from 0.25 s up to a
        tenth of the window, or what a 429 asked for."""
        if isinstance(error, RateLimited) and error.retry_after is not None:
            return error.retry_after
        if retries == 0:
            return 0.0
        cap = max(0.25, self.settings.uncertain_retry_window / 10)
        return float(min(cap, 0.25 * 2 ** (retries - 1)))

    def _refused(self, attempt: Attempt, exc: JsmsError, *, uncertain: bool) -> str:
        """The API answered a submission with an error."""
        job = attempt.job
        if isinstance(exc, AuditPending):
            if uncertain:
                return self._took_effect(attempt, "a retry answered 50103")
            return self._blocked(job, exc)
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

    def _apply(self, change: Change, **context: object) -> Applied:
        """Apply a change, waiting out a Redis that does not answer (a restart, a failover):
        an outcome the API gave is never dropped for want of Redis. Bounded, and logged."""
        deadline = self.clock() + RECORD_PATIENCE_SECONDS
        pause = 0.1
        while True:
            try:
                return self.store.apply(change)
            except _REDIS_DOWN as exc:
                if self.clock() + pause > deadline:
                    log.error("outcome_not_recorded", to=change.to, error=str(exc), **context)
                    raise
                log.warning("outcome_record_waiting_for_redis", error=str(exc), **context)
                self.sleep(pause)
                pause = min(5.0, pause * 2)

    def _accepted(self, attempt: Attempt, sign_id: int) -> str:
        job = attempt.job
        log.info("submission_accepted_by_api", api_sign_id=sign_id)
        change = submitted_change(job, sign_id, self.settings.poll_initial_seconds)
        change.from_ = _ACCEPTABLE_FROM
        change.unpark = True
        change.proof = True
        applied = self._apply(change, api_sign_id=sign_id)
        if applied.applied:
            if applied.previous != "submitting":
                log.warning("late_answer_adopted", api_sign_id=sign_id, was=applied.previous)
            log.info("signature_submitted", sign_id=sign_id)
            return "pending_audit"
        # The job ended meanwhile (failed, cancelled, abandoned): the signature exists all the
        # same, so it is tracked and its audit result published.
        log.error("late_answer_for_finished_job", api_sign_id=sign_id, state=applied.previous)
        self._track_orphan(job, sign_id)
        return applied.previous or "missing"

    def _track_orphan(self, job: JobRecord, sign_id: int) -> None:
        redis_ = self.store.redis
        key = self.store.keys.signature(job.account, sign_id)
        pipe = redis_.pipeline(transaction=True)
        pipe.hsetnx(key, "since", self.store.time_ms())
        pipe.hsetnx(key, "sign", job.sign or "")
        pipe.zadd(self.store.keys.due(), {f"{job.account}:{sign_id}": 0}, nx=True)
        pipe.execute()

    def _took_effect(self, attempt: Attempt, why: str) -> str:
        job = attempt.job
        if job.op == "modify":
            return self._accepted(attempt, _need(job.sign_id))
        error = {"code": 50103, "message": f"create outcome unknown: {why}"}
        applied = self._apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to="unconfirmed",
                set={"error": json.dumps(error), "waiting_for": "sign_id"},
                lease_clear=True,
                # The account's next job goes on, probing: a 50103 then means this create's
                # audit is pending, and the account waits blocked; a success, that it is over.
                release=True,
                probing=True,
                events=[
                    events.make(
                        "job.unconfirmed", job.account, job_id=job.id, sign=job.sign, reason=why
                    )
                ],
            )
        )
        if not applied.applied:
            return applied.previous
        log.warning("job_unconfirmed", why=why)
        if applied.next_job:
            self.enqueue([applied.next_job])
        self.on_unconfirmed(job.account)
        return "unconfirmed"

    def _modify_resolved(self, attempt: Attempt, exc: InvalidSignId) -> str:
        """A retried modify refused as 'not rejected': the first one went through if its audit
        has already moved on."""
        job = attempt.job
        try:
            signature = self.client.query(attempt.creds, _need(job.sign_id))
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
            signature = self.client.query(attempt.creds, _need(attempt.job.sign_id))
        except JsmsError:
            return False
        return signature.status is Status.PENDING

    def _mark_uncertain(self, job: JobRecord, exc: OutcomeUnknown | None) -> None:
        """The job's last attempt may have reached the API: an error that says so, or (None) a
        run found interrupted mid-submission."""
        metrics().uncertain.labels(job.op).inc()
        error = exc.to_dict() if exc else {"code": None, "message": "interrupted mid-submission"}
        self._apply(
            Change(
                id=job.id,
                from_=["submitting"],
                set={"uncertain": "1", "error": json.dumps(error)},
                stamp="uncertain_since",
            )
        )

    def _blocked(self, job: JobRecord, exc: AuditPending) -> str:
        s = self.settings
        self._apply(
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

    def _key_missing(self, job: JobRecord, exc: SecretKeyError) -> str:
        """This worker cannot open the account's secret: its SIGNQ_SECRET_KEY is wrong. The
        tenant is not at fault and is not paused; the job waits for a worker that can."""
        log.error("secret_key_cannot_open_secret", error=str(exc))
        self._apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to="queued",
                set={
                    "waiting_for": "secret_key",
                    "error": json.dumps({"code": None, "message": str(exc)}),
                },
                retry_in=KEY_MISSING_RETRY_MS,
                lease_clear=True,
            )
        )
        raise RetryLater(str(exc), KEY_MISSING_RETRY_MS)

    def _pause(self, job: JobRecord, reason: str, exc: JsmsError | None = None) -> str:
        error = exc.to_dict() if exc else {"code": None, "message": reason}
        self._apply(
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

    def _transient(
        self,
        attempt: Attempt,
        exc: JsmsError,
        *,
        uncertain: bool,
        delay_ms: int | None = None,
    ) -> str:
        job = attempt.job
        first = job.ms("first_failure_at") or attempt.now_ms()
        if attempt.now_ms() - first > self.settings.retry_budget_seconds * 1000:
            return self._fail(job, exc, "gave up after the retry budget: " + str(exc))
        if delay_ms is not None:
            delay = delay_ms
        elif isinstance(exc, RateLimited) and exc.retry_after is not None:
            delay = int(exc.retry_after * 1000)
        else:
            delay = _backoff(
                job.attempts, self.settings.retry_backoff_min, self.settings.retry_backoff_max
            )
        self._apply(
            Change(
                id=job.id,
                from_=["submitting"],
                to="queued",
                set={
                    "waiting_for": "retry",
                    "error": json.dumps(exc.to_dict()),
                    "uncertain": "1" if uncertain else "",
                },
                stamp="first_failure_at",
                retry_in=delay,
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
        applied = self._apply(
            Change(
                id=job.id,
                from_=["submitting", "queued", "parked"],
                to="failed",
                set={"error": json.dumps(error), "waiting_for": ""},
                lease_clear=True,
                unpark=True,
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

    def _delete(self, attempt: Attempt) -> str:
        job, creds = attempt.job, attempt.creds
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
            return self._api_error(attempt, exc)
        retention = retention_ms(self.settings.job_retention_days)
        self._apply(
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

    def _api_error(self, attempt: Attempt, exc: JsmsError) -> str:
        """A query or delete refused: pause on auth, reschedule if transient, else fail."""
        if isinstance(exc, AuthError):
            return self._pause(attempt.job, str(exc), exc)
        if exc.retryable:
            return self._transient(attempt, exc, uncertain=False)
        return self._fail(attempt.job, exc)

    def _skip(self, job: JobRecord, sign_id: int, why: str) -> str:
        """Cleanup leaves this signature alone, says why, and counts it as no failure."""
        message = f"skipped by cleanup: {why}"
        self._apply(
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
        """A deleted signature's audit will never resolve: its job is over, its gate moves on."""
        holder = text(self.store.redis.get(self.store.keys.gate(account)))
        if not holder:
            return
        record = self.jobs.get(holder)
        if record is None or record.sign_id != sign_id:
            return
        applied = self._apply(
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

    def _query(self, attempt: Attempt) -> str:
        job = attempt.job
        try:
            signature = self.client.query(attempt.creds, _need(job.sign_id))
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
        self._apply(
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


def _undecided(attempt: Attempt) -> str:
    why = "no decisive answer within the uncertain window"
    if attempt.probing:
        why += " (an earlier unconfirmed create's audit may have been the pending one)"
    return why


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
