"""Tracked signatures: what signq knows of each, when to look again, and status changes.

Every signature signq created or modified is tracked, and so is any a user registers (the API
cannot list them). A sorted set orders them by next check, so a tick reads only what is due.
Polls and callbacks report what they saw through one compare-and-set script (``observe``):
only a real change publishes its event, once, and an audit that resolves finishes the job
holding the account's gate and hands the gate on, in the same step.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any

import structlog

from worker import events, tracing
from worker.accounts import Accounts
from worker.dispatch import Dispatcher
from worker.errors import AccountError, JobError
from worker.jobs import Jobs
from worker.jsms.client import JsmsClient
from worker.jsms.errors import AuthError, InvalidSignId, JsmsError
from worker.jsms.models import Signature, validate_sign_id
from worker.keys import member, parse_member
from worker.metrics import metrics
from worker.records import stored_trace
from worker.store import Store, fields, text, texts

log = structlog.get_logger(__name__)
CLAIM_MS = 60_000
# A failed poll is tried again after this, or sooner when pending audits are polled more often.
TRANSIENT_RETRY_MS = 30_000
PAUSED_RETRY_MS = 60_000
# How long a pushed result no job claims yet is kept for its account.
ORPHAN_TTL_MS = 7 * 86_400_000


@dataclass(frozen=True)
class Tracked:
    """A tracked signature as stored."""

    account: str
    sign_id: int
    sign: str | None
    status: int | None
    use_status: int | None
    job_id: str | None
    since: int
    status_at: int | None
    refuse_reason: str | None
    # The account's default signature (newer API versions say so): cleanup never deletes it.
    is_default: bool = False

    @classmethod
    def from_hash(cls, account: str, sign_id: int, data: dict[str, str]) -> Tracked:
        """Parse a tracked signature's hash (its account and sign id are in its key)."""
        return cls(
            account=account,
            sign_id=int(sign_id),
            sign=data.get("sign") or None,
            status=int(data["status"]) if data.get("status") else None,
            use_status=int(data["use_status"]) if data.get("use_status") else None,
            job_id=data.get("job_id") or None,
            since=int(float(data.get("since") or 0)),
            status_at=int(float(data["status_at"])) if data.get("status_at") else None,
            refuse_reason=data.get("refuse_reason") or None,
            is_default=data.get("is_default") == "1",
        )


class Tracker:
    """Registration, polling and status changes of tracked signatures."""

    def __init__(
        self,
        store: Store,
        accounts: Accounts,
        jobs: Jobs,
        client: JsmsClient,
        dispatch: Dispatcher,
    ) -> None:
        self.store = store
        self.keys = store.keys
        self.settings = store.settings
        self.accounts = accounts
        self.jobs = jobs
        self.client = client
        self.dispatch = dispatch

    def track(self, account: str, sign_ids: list[int]) -> int:
        """Register existing signatures to watch; returns how many were new. Due at once."""
        self.accounts.require(account)
        ids = [validate_sign_id(s) for s in sign_ids]
        now = self.store.time_ms()
        pipe = self.store.redis.pipeline(transaction=False)
        for sign_id in ids:
            key = self.keys.signature(account, sign_id)
            pipe.hsetnx(key, "since", now)
            pipe.zadd(self.keys.due(), {member(account, sign_id): now}, nx=True)
        replies = pipe.execute()
        return sum(1 for n in range(len(ids)) if replies[n * 2])

    def get(self, account: str, sign_id: int) -> Tracked | None:
        """A tracked signature, or None."""
        data = fields(self.store.redis.hgetall(self.keys.signature(account, sign_id)))
        return Tracked.from_hash(account, sign_id, data) if data else None

    def claim_due(self, limit: int) -> list[str]:
        """Take up to ``limit`` due signatures for polling (``account:sign_id`` members)."""
        claim = self.store.claim_due(limit, CLAIM_MS)
        lag = metrics().poll_lag
        for due_at in claim.due_at:
            lag.observe(max(0.0, (claim.now_ms - due_at) / 1000))
        return claim.members

    def poll(self, members: list[str]) -> list[str]:
        """Poll each claimed signature and report what was seen; returns the outcomes."""
        outcomes = [self.poll_one(member) for member in members]
        counter = metrics().polls
        for outcome in outcomes:
            counter.labels(outcome).inc()
        return outcomes

    def poll_one(self, member: str) -> str:
        """Query one signature at the API and apply what came back (with tracing on, the
        ``signq.poll`` span, in the trace of the job that submitted the signature)."""
        account, sign_id = parse_member(member)
        if not tracing.enabled():
            return self._poll_one(member, account, sign_id)
        parent = stored_trace(
            text(self.store.redis.hget(self.keys.signature(account, sign_id), "trace"))
        )
        with tracing.span("signq.poll", parent=parent, account=account, sign_id=sign_id) as span:
            outcome = self._poll_one(member, account, sign_id)
            tracing.annotate(span, outcome=outcome)
            return outcome

    def _poll_one(self, member: str, account: str, sign_id: int) -> str:
        claim = self.store.poll(account, self.settings.rate_limits)
        if claim.outcome == "no_account":
            self._forget(member)
            return claim.outcome
        if claim.outcome in ("paused", "throttled"):
            wait = claim.wait_ms if claim.outcome == "throttled" else PAUSED_RETRY_MS
            self._later(member, wait)
            return claim.outcome
        try:
            creds = self.accounts.credentials(account, claim.app_key, claim.stored_secret)
            signature = self.client.query(creds, sign_id)
        except InvalidSignId:
            return self.observe_gone(account, sign_id)
        except AuthError as exc:
            self.accounts.pause(account, str(exc))
            self._later(member, PAUSED_RETRY_MS)
            return "paused"
        except (JsmsError, AccountError) as exc:
            log.warning("poll_failed", account=account, sign_id=sign_id, error=str(exc))
            self._later(member, min(TRANSIENT_RETRY_MS, self.settings.poll_policy.max_ms))
            return "failed"
        return self.observe(account, signature)

    def observe(self, account: str, signature: Signature, *, reason: str | None = None) -> str:
        """Apply an observed status (from a poll or a callback): compare-and-set."""
        base = {
            "sign_id": signature.sign_id,
            "status": int(signature.status),
            "use_status": signature.use_status,
            "reason": reason,
        }
        templates = {
            "approved": events.make("signature.approved", account, **base),
            "rejected": events.make("signature.rejected", account, **base),
            "use_changed": events.make("signature.use_changed", account, **base),
            "gone": "{}",
        }
        return self._observe(
            account,
            signature.sign_id,
            status=int(signature.status),
            use_status=signature.use_status,
            reason=reason,
            templates=templates,
            is_default=signature.is_default,
        )

    def observe_result(
        self, account: str, sign_id: int, status: int, *, reason: str | None = None
    ) -> str:
        """Apply an audit result pushed by a callback (status and reason, no use status)."""
        base = {"sign_id": sign_id, "status": status, "reason": reason}
        templates = {
            "approved": events.make("signature.approved", account, **base),
            "rejected": events.make("signature.rejected", account, **base),
            "use_changed": "{}",
            "gone": "{}",
        }
        return self._observe(
            account, sign_id, status=status, use_status=None, reason=reason, templates=templates
        )

    def observe_gone(self, account: str, sign_id: int) -> str:
        """The API no longer knows the signature (50102): stop tracking it, say so."""
        gone = events.make(
            "signature.deleted",
            account,
            sign_id=sign_id,
            missing=True,
            reason="not found at the API",
        )
        return self._observe(
            account, sign_id, status=None, use_status=0, reason=None, templates={"gone": gone}
        )

    def _observe(
        self,
        account: str,
        sign_id: int,
        *,
        status: int | None,
        use_status: int | None,
        reason: str | None,
        templates: dict[str, str],
        is_default: bool | None = None,
    ) -> str:
        s = self.settings
        spec: dict[str, Any] = {
            "is_default": is_default,
            "account": account,
            "sign_id": str(sign_id),  # never a Lua number: ids may exceed its precision
            "use_status": use_status,
            "reason": reason,
            "retention": s.retention.job_ms,
            "delays": {
                "pending_ms": s.poll_policy.first_ms,
                "max_ms": s.poll_policy.max_ms,
                "resolved_ms": s.poll_policy.resolved_ms,
                "jitter": random.uniform(0.8, 1.2),  # noqa: S311 - spreading polls, not security
            },
            "events": templates,
        }
        if status is not None:
            spec["status"] = status
        observed = self.store.observe(spec)
        what, next_job = observed.what, observed.next_job
        if next_job:
            self.dispatch.jobs([next_job])
        if what == "gone":
            metrics().events.labels("signature.deleted").inc()
        elif what == "changed" and status in (1, 2):
            metrics().events.labels(f"signature.{'approved' if status == 1 else 'rejected'}").inc()
        if what not in ("same", "untracked"):
            log.info(
                "signature_observed", account=account, sign_id=sign_id, what=what, status=status
            )
        return what

    def adopt(
        self, account: str, sign_id: int, status: int, *, reason: str | None = None
    ) -> str | None:
        """A result pushed for a sign id nothing tracks: kept for the account (it may belong to
        a create not yet known to be unconfirmed), then matched against the account's
        unconfirmed creates. Returns the id of the job it settled, if any."""
        kept = json.dumps({"status": status, "reason": reason}, ensure_ascii=False)
        pipe = self.store.redis.pipeline(transaction=True)
        pipe.hset(self.keys.orphans(account), str(sign_id), kept)
        pipe.pexpire(self.keys.orphans(account), ORPHAN_TTL_MS)
        pipe.sadd(self.keys.orphaned(), account)
        pipe.execute()
        return self.settle_unconfirmed(account).get(sign_id)

    def settle_unconfirmed(self, account: str) -> dict[int, str]:
        """Match the results kept for an account to its unconfirmed creates by their sign (the
        API tells a sign id's sign, asked once); each match confirms the create and applies its
        result. Returns the sign ids settled, with their job ids."""
        redis_ = self.store.redis
        kept = fields(redis_.hgetall(self.keys.orphans(account)))
        if not kept:
            redis_.srem(self.keys.orphaned(), account)
            return {}
        waiting = texts(redis_.smembers(self.keys.unconfirmed(account)))
        records = sorted(
            (r for r in map(self.jobs.get, waiting) if r and r.state == "unconfirmed"),
            key=lambda r: r.created_at,
        )
        if not records:
            return {}
        settled: dict[int, str] = {}
        for raw_id, raw in kept.items():
            pushed = json.loads(raw)
            sign = pushed.get("sign") or self._sign_of(account, int(raw_id), pushed)
            match = next((r for r in records if sign and r.sign == sign), None)
            if match is None:
                continue
            records.remove(match)
            try:
                self.jobs.confirm(match.id, int(raw_id), by="callback")
            except JobError:
                continue
            self.observe_result(
                account, int(raw_id), int(pushed["status"]), reason=pushed["reason"]
            )
            redis_.hdel(self.keys.orphans(account), raw_id)
            settled[int(raw_id)] = match.id
            log.info("unconfirmed_create_adopted", account=account, sign_id=raw_id, job_id=match.id)
        if settled and not redis_.exists(self.keys.orphans(account)):
            redis_.srem(self.keys.orphaned(), account)
        return settled

    def confirm_checked(self, job_id: str, sign_id: int) -> None:
        """An operator's confirmation of an unconfirmed create, checked first at the API: the
        sign id must be one of the account's signatures, with the job's sign."""
        record = self.jobs.require(job_id)
        sign_id = validate_sign_id(sign_id)
        if record.state != "unconfirmed":
            raise JobError(f"job {job_id} is {record.state}, not unconfirmed")
        try:
            found = self.client.query(self.accounts.credentials_of(record.account), sign_id)
        except InvalidSignId:
            raise JobError(
                f"sign id {sign_id} is not a signature of account {record.account} (50102)"
            ) from None
        except JsmsError as exc:
            raise JobError(f"could not check sign id {sign_id} at the API: {exc}") from None
        if found.sign != record.sign:
            raise JobError(
                f"sign id {sign_id} is {found.sign!r}, but job {job_id} created {record.sign!r}"
            )
        self.jobs.confirm(job_id, sign_id)
        self.observe(record.account, found)

    def settle_kept(self) -> int:
        """Try again to match kept results on every account that has some (the reaper's full
        pass: a match can fail for a while, as when the API does not answer the query)."""
        accounts = texts(self.store.redis.smembers(self.keys.orphaned()))
        return sum(len(self.settle_unconfirmed(account)) for account in accounts)

    def _sign_of(self, account: str, sign_id: int, pushed: dict[str, Any]) -> str | None:
        """The sign of a kept result's signature, asked of the API and then kept with it."""
        try:
            sign = self.client.query(self.accounts.credentials_of(account), sign_id).sign
        except InvalidSignId:
            self.store.redis.hdel(self.keys.orphans(account), str(sign_id))
            return None
        except (JsmsError, AccountError) as exc:
            log.warning("kept_result_unmatched", account=account, sign_id=sign_id, error=str(exc))
            return None
        pushed["sign"] = sign
        self.store.redis.hset(
            self.keys.orphans(account), str(sign_id), json.dumps(pushed, ensure_ascii=False)
        )
        return sign

    def _later(self, member: str, delay_ms: int) -> None:
        self.store.redis.zadd(self.keys.due(), {member: self.store.time_ms() + delay_ms}, xx=True)

    def _forget(self, due: str) -> None:
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.delete(self.keys.signature(*parse_member(due)))
        pipe.zrem(self.keys.due(), due)
        pipe.execute()
