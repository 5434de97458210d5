"""The per-account audit gate: acquire-or-park at submit, FIFO hand-off, cap, repair."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.conftest import delete_prefix
from tests.system import System, build_system, resolve
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.errors import JobError
from worker.jsms.models import Status
from worker.store import Change, Repair


@pytest.fixture
def system(emulator_server: EmulatorServer, admin: EmulatorAdmin) -> Iterator[System]:
    """A system on its own prefix whose messages are recorded, not sent."""
    sys_ = build_system(emulator_server, admin, max_parked_per_account=3)
    yield sys_
    sys_.runtime.close()
    delete_prefix(sys_.settings.redis_url, sys_.settings.prefix)


def gate(system: System, account: str) -> str | None:
    """The job id holding the account's gate."""
    value = system.runtime.store.redis.get(system.runtime.store.keys.gate(account))
    return str(value) if value else None


def parked(system: System, account: str) -> list[str]:
    """The account's FIFO."""
    return list(system.runtime.store.redis.lrange(system.runtime.store.keys.parked(account), 0, -1))


def test_first_submission_holds_the_gate_and_the_rest_park_in_order(system: System) -> None:
    """Only the gate holder gets a message; later submissions wait in a FIFO without one."""
    account = system.tenant()
    ids = [system.runtime.jobs.create(account, f"签名{n}").job_id for n in range(4)]
    assert gate(system, account) == ids[0]
    assert parked(system, account) == ids[1:]
    assert system.sent == [ids[0]]
    assert [system.state(i) for i in ids] == ["queued", "parked", "parked", "parked"]


def test_release_hands_the_gate_to_the_next_in_fifo_order(system: System) -> None:
    """Each release gives the slot to the oldest parked job and sends exactly its message."""
    account = system.tenant()
    ids = [system.runtime.jobs.create(account, f"签名{n}").job_id for n in range(3)]
    for expected in ids:
        assert gate(system, account) == expected
        assert system.sent == [expected]
        assert system.drain() == ["pending_audit"]
        record = system.runtime.jobs.require(expected)
        system.admin.force(record.sign_id or 0, status=1)
        resolve(system.runtime, expected, Status.APPROVED)
        assert system.state(expected) == "approved"
    assert gate(system, account) is None
    assert parked(system, account) == []
    assert system.sent == []


def test_release_by_a_job_that_does_not_hold_the_gate_changes_nothing(system: System) -> None:
    """A late or duplicate release cannot take the slot from its holder."""
    account = system.tenant()
    first = system.runtime.jobs.create(account, "第一个").job_id
    second = system.runtime.jobs.create(account, "第二个").job_id
    system.runtime.store.redis.hset(system.runtime.store.keys.job(second), "state", "pending_audit")
    applied = system.runtime.store.apply(Change(id=second, release=True))
    assert (applied.applied, applied.next_job) == (True, None)
    assert gate(system, account) == first
    assert parked(system, account) == [second]


def test_parked_cap_refuses_with_a_clear_error(system: System) -> None:
    """Past the per-account cap, a submission is refused, naming the limit; nothing is stored."""
    account = system.tenant()
    for n in range(4):
        system.runtime.jobs.create(account, f"签名{n}")
    with pytest.raises(JobError, match=r"has 3 parked jobs.*SIGNQ_MAX_PARKED_PER_ACCOUNT=3"):
        system.runtime.jobs.create(account, "太多了")
    assert len(parked(system, account)) == 3


def test_cancelled_parked_job_is_skipped_at_hand_off(system: System) -> None:
    """Cancelling a parked job removes it from the FIFO; the gate goes to the one after it."""
    account = system.tenant()
    first, second, third = (
        system.runtime.jobs.create(account, f"签名{n}").job_id for n in range(3)
    )
    system.runtime.jobs.cancel(second)
    assert system.state(second) == "cancelled"
    assert system.drain() == ["pending_audit"]
    system.admin.force(system.runtime.jobs.require(first).sign_id or 0, status=2)
    resolve(system.runtime, first, Status.REJECTED)
    assert gate(system, account) == third
    assert system.sent == [third]


def test_queries_and_deletes_never_wait_for_the_gate(system: System) -> None:
    """Only create and modify take the gate; a query runs while an audit is pending."""
    account = system.tenant()
    system.runtime.jobs.create(account, "占着")
    query = system.runtime.jobs.query(account, 10_001)
    assert query.state == "queued"
    assert query.job_id in system.sent


def test_repair_releases_a_finished_holder_and_promotes_a_stranded_head(system: System) -> None:
    """An operator's hand (or anything else) leaving the gate inconsistent is repaired."""
    account = system.tenant()
    first, second, third = (
        system.runtime.jobs.create(account, f"签名{n}").job_id for n in range(3)
    )
    keys = system.runtime.store.keys
    system.runtime.store.redis.hset(keys.job(first), "state", "failed")
    assert system.runtime.store.repair(account) == Repair("released", second)
    system.runtime.store.redis.delete(keys.gate(account))
    assert system.runtime.store.repair(account) == Repair("promoted", third)
    assert gate(system, account) == third
    assert system.runtime.store.repair(account) == Repair("ok", None)


def test_accounts_are_independent(system: System) -> None:
    """One account's backlog does not hold another's first submission."""
    busy, other = system.tenant(), system.tenant()
    for n in range(3):
        system.runtime.jobs.create(busy, f"积压{n}")
    first_of_other = system.runtime.jobs.create(other, "另一个").job_id
    assert gate(system, other) == first_of_other
    assert system.state(first_of_other) == "queued"


def test_a_running_job_is_listed_by_its_lease(system: System) -> None:
    """'submitting' is indexed by the in-flight leases (no index of its own): a claimed job is
    listed and counted as submitting while it holds its lease, and leaving the state clears
    the lease."""
    account = system.tenant()
    job_id = system.runtime.jobs.create(account, "运行").job_id
    store, s = system.runtime.store, system.settings
    claim = store.start(job_id, int(s.lease_seconds * 1000), s.rate_limits)
    assert claim.outcome == "run"
    assert [r.id for r in system.runtime.jobs.find(state="submitting")] == [job_id]
    assert store.redis.zscore(store.keys.inflight(), job_id) is not None
    assert not store.redis.exists(f"{s.prefix}:jobs:state:submitting")
    applied = store.apply(Change(id=job_id, from_=["submitting"], to="queued", retry_in=60_000))
    assert applied.applied
    assert store.redis.zscore(store.keys.inflight(), job_id) is None
    assert system.runtime.jobs.find(state="submitting") == []
    assert [r.id for r in system.runtime.jobs.find(state="queued")] == [job_id]


def test_a_job_settled_while_holding_a_handed_gate_passes_it_on_at_its_start(
    system: System,
) -> None:
    """A gate handed to a job whose record was settled meanwhile without a release (a crash
    between two steps, an operator's hand) moves on when that job's message is handled: its
    start hands the gate to the next in the FIFO and sends its message, instead of leaving the
    account waiting for the reaper."""
    account = system.tenant()
    first, second = (system.runtime.jobs.create(account, f"签名{n}").job_id for n in range(2))
    store = system.runtime.store
    settled = store.apply(
        Change(id=first, from_=["queued"], to="cancelled", terminal=60_000, release=False)
    )
    assert settled.applied
    assert gate(system, account) == first
    system.sent.clear()
    assert system.runtime.pipeline.run(first) == "settled"
    assert gate(system, account) == second
    assert system.sent == [second]
    assert system.drain() == ["pending_audit"]
    assert system.state(second) == "pending_audit"
