"""Cleanup of unused signatures: delete tracked ones not in use and older than a threshold.

Candidates come from the tracked signatures (the API cannot list them). Each chosen one becomes
a delete job marked as cleanup, so deletes go through the rate limits, retries and events of the
pipeline; the job queries the signature again just before deleting it, and one in use (or the
account's default: 50105) or with an audit pending is skipped with its reason, not failed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from worker.errors import JobError
from worker.keys import parse_member
from worker.records import JobSpec, Submitted
from worker.runtime import Runtime
from worker.settings import Settings
from worker.store import fields, texts
from worker.tracker import Tracked

PAGE = 1000
_STATUS = {"approved": 1, "rejected": 2}


@dataclass(frozen=True)
class Policy:
    """What cleanup may delete."""

    older_than_seconds: float
    statuses: frozenset[int] = frozenset({1, 2})
    accounts: frozenset[str] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        """The periodic cleanup's policy."""
        return cls(
            older_than_seconds=settings.cleanup_older_than_days * 86_400,
            statuses=parse_statuses(settings.cleanup_statuses),
        )


@dataclass
class Report:
    """A cleanup run: what it chose and what it did."""

    candidates: list[Tracked] = field(default_factory=list)
    jobs: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class Cleanup:
    """Chooses and deletes unused signatures."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.keys = runtime.store.keys

    def plan(self, policy: Policy) -> list[Tracked]:
        """Tracked signatures the policy would delete (one pass over all tracked, in pages)."""
        cutoff = self.runtime.store.time_ms() - int(policy.older_than_seconds * 1000)
        redis = self.runtime.store.redis
        chosen: list[Tracked] = []
        offset = 0
        while True:
            members = texts(redis.zrange(self.keys.due(), offset, offset + PAGE - 1))
            if not members:
                return chosen
            offset += len(members)
            pipe = redis.pipeline(transaction=False)
            for member in members:
                pipe.hgetall(self.keys.signature(*parse_member(member)))
            for member, data in zip(members, pipe.execute(), strict=True):
                account, sign_id = parse_member(member)
                record = fields(data)
                if not record:
                    continue
                tracked = Tracked.from_hash(account, sign_id, record)
                if tracked.since <= cutoff and _eligible(tracked, policy):
                    chosen.append(tracked)

    def run(self, policy: Policy, *, dry_run: bool) -> Report:
        """Plan, and unless ``dry_run``, enqueue one cleanup delete per candidate."""
        report = Report(candidates=self.plan(policy))
        if dry_run or not report.candidates:
            return report
        day = datetime.now(UTC).strftime("%Y%m%d")
        specs = [
            JobSpec(
                "delete",
                t.account,
                sign_id=t.sign_id,
                key=f"cleanup-{t.sign_id}-{day}",
                cleanup=True,
            )
            for t in report.candidates
        ]
        for tracked, result in zip(
            report.candidates, self.runtime.jobs.submit_many(specs), strict=True
        ):
            if isinstance(result, Submitted):
                report.jobs.append(result.job_id)
            else:
                report.errors.append(f"{tracked.account}:{tracked.sign_id}: {result}")
        return report


def _eligible(tracked: Tracked, policy: Policy) -> bool:
    if policy.accounts is not None and tracked.account not in policy.accounts:
        return False
    if tracked.status not in policy.statuses or tracked.job_id or tracked.is_default:
        return False
    return tracked.use_status == 0


def parse_statuses(text: str) -> frozenset[int]:
    """``approved,rejected`` as status numbers; anything else is an error naming it."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in _STATUS]
    if unknown or not names:
        raise JobError(f"statuses may be approved and rejected only, got {text!r}")
    return frozenset(_STATUS[n] for n in names)


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m`` or ``45s`` in seconds."""
    units = {"d": 86_400, "h": 3_600, "m": 60, "s": 1}
    try:
        value, unit = float(text[:-1]), text[-1]
        if unit not in units or value < 0:
            raise ValueError(text)
    except (ValueError, IndexError):
        raise JobError(f"an age looks like 30d, 12h, 90m or 45s, got {text!r}") from None
    return value * units[unit]
