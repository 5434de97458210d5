"""Cleanup of unused signatures: dry run, in-use refusal, pending protection, thresholds."""

from __future__ import annotations

import pytest

from tests.system import System
from worker.cleanup import Cleanup, Policy, parse_age, parse_statuses
from worker.errors import JobError
from worker.jsms.models import Status


def approved(system: System, account: str, sign: str, *, use_status: int = 0) -> int:
    """A signature created through signq and approved: its sign id."""
    job = system.runtime.jobs.create(account, sign).job_id
    system.drain()
    sign_id = system.runtime.jobs.require(job).sign_id or 0
    system.admin.force(sign_id, status=1, use_status=use_status)
    system.runtime.tracker.poll_one(f"{account}:{sign_id}")
    system.drain()
    return sign_id


NOW = Policy(older_than_seconds=0)


def test_dry_run_lists_and_changes_nothing(system: System) -> None:
    """Dry run names the candidates and enqueues nothing; the account's default signature (the
    API says which) is never one."""
    account = system.tenant()
    default = approved(system, account, "默认的")
    spare = approved(system, account, "多余的")
    assert system.runtime.tracker.get(account, default).is_default  # type: ignore[union-attr]
    report = Cleanup(system.runtime).run(NOW, dry_run=True)
    assert [t.sign_id for t in report.candidates] == [spare]
    assert report.jobs == []
    assert system.sent == []


def test_cleanup_deletes_unused_and_skips_in_use_and_default(system: System) -> None:
    """The unused one is deleted (signature.deleted); the default (refused with 50105 by an API
    version that does not say which is the default) and the one in use are skipped with their
    reasons, and no job fails."""
    account = system.tenant()
    default = approved(system, account, "默认的")
    store = system.runtime.store
    store.redis.hdel(store.keys.signature(account, default), "is_default")
    spare = approved(system, account, "多余的")
    busy = approved(system, account, "在用的")
    system.admin.force(busy, use_status=1)  # came into use after the tracker last looked
    report = Cleanup(system.runtime).run(NOW, dry_run=False)
    assert len(report.jobs) == 3
    outcomes = system.drain()
    assert sorted(outcomes) == ["deleted", "skipped", "skipped"]
    states = {system.runtime.jobs.require(j).sign_id: system.state(j) for j in report.jobs}
    assert states == {default: "cancelled", spare: "deleted", busy: "cancelled"}
    assert not any(e["type"] == "job.failed" for e in system.events(account))
    deleted = [e for e in system.events(account) if e["type"] == "signature.deleted"]
    assert [e["sign_id"] for e in deleted] == [spare]
    tracked = system.runtime.tracker.get(account, default)
    assert tracked is not None
    assert "in use or the default" in system.runtime.store.redis.hget(
        system.runtime.store.keys.signature(account, default), "cleanup_skipped"
    )


def test_a_pending_audit_is_never_a_candidate(system: System) -> None:
    """A signature whose audit is pending (its job holds the gate) is left alone."""
    account = system.tenant()
    system.runtime.jobs.create(account, "审核中")
    system.drain()
    assert Cleanup(system.runtime).plan(NOW) == []


def test_threshold_status_and_account_filters(system: System) -> None:
    """Only old enough, of the chosen statuses and accounts."""
    first, second = system.tenant(), system.tenant()
    approved(system, first, "甲的默认")  # each account's first signature is its default
    approved(system, second, "乙的默认")
    approved(system, first, "甲的")
    job = system.runtime.jobs.create(second, "乙的").job_id
    system.drain()
    sign_id = system.runtime.jobs.require(job).sign_id or 0
    system.admin.force(sign_id, status=2)
    system.runtime.tracker.poll_one(f"{second}:{sign_id}")
    cleanup = Cleanup(system.runtime)
    assert cleanup.plan(Policy(older_than_seconds=3600)) == []
    only_rejected = Policy(older_than_seconds=0, statuses=frozenset({int(Status.REJECTED)}))
    assert [t.account for t in cleanup.plan(only_rejected)] == [second]
    only_first = Policy(older_than_seconds=0, accounts=frozenset({first}))
    assert [t.account for t in cleanup.plan(only_first)] == [first]


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 2_592_000), ("12h", 43_200), ("90m", 5_400), ("45s", 45)]
)
def test_ages(text: str, seconds: float) -> None:
    """--older-than takes d, h, m and s."""
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["30", "x", "-1d", "3w", ""])
def test_bad_ages_are_named(text: str) -> None:
    """A bad --older-than says what it should look like."""
    with pytest.raises(JobError, match="an age looks like"):
        parse_age(text)


def test_bad_statuses_are_named() -> None:
    """--status holds approved and rejected only."""
    assert parse_statuses("approved") == frozenset({1})
    with pytest.raises(JobError, match="statuses may be approved and rejected only"):
        parse_statuses("pending")
