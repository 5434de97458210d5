"""The emulator's state machine, without HTTP: audit decisions, pending slot, scale."""

from __future__ import annotations

import pytest

from worker.emulator.world import Account, ApiFault, AuditRules, SignFields, World
from worker.jsms.models import Status


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def fields(sign: str) -> SignFields:
    """Content with just a sign."""
    return SignFields(sign=sign, type=None, remark=None, image_hashes=())


def test_decisions_are_deterministic_for_a_seed() -> None:
    """The same seed gives the same audit outcomes; another seed gives others."""

    def outcomes(seed: int) -> list[Status]:
        clock = Clock()
        world = World(AuditRules(audit_delay=1, approval_rate=0.5, seed=seed), clock)
        sigs = []
        for n in range(60):
            account = world.add_account(Account(f"k{n}", "s"))
            sigs.append(world.create(account, fields("签名")))
        clock.now = 2
        world.advance()
        return [s.status for s in sigs]

    first, again, other = outcomes(7), outcomes(7), outcomes(8)
    assert first == again
    assert first != other
    assert {Status.APPROVED, Status.REJECTED} == set(first)


def test_markers_force_the_outcome() -> None:
    """REJ rejects and PASS approves, whatever the approval rate."""
    clock = Clock()
    world = World(AuditRules(audit_delay=1, approval_rate=0.0), clock)
    rejected = world.create(world.add_account(Account("a", "s")), fields("xREJx"))
    approved = world.create(world.add_account(Account("b", "s")), fields("xPASSx"))
    clock.now = 1
    assert {s.sign_id for s in world.advance()} == {rejected.sign_id, approved.sign_id}
    assert (rejected.status, approved.status) == (Status.REJECTED, Status.APPROVED)
    assert rejected.refuse_reason


def test_nothing_resolves_before_its_time() -> None:
    """advance() resolves only audits whose delay has passed."""
    clock = Clock()
    world = World(AuditRules(audit_delay=10), clock)
    sig = world.create(world.add_account(Account("a", "s")), fields("等待"))
    clock.now = 9.99
    assert world.advance() == []
    assert sig.status is Status.PENDING
    clock.now = 10
    assert world.advance() == [sig]


def test_a_modified_signature_is_not_resolved_by_its_old_schedule() -> None:
    """A resubmission restarts the audit: the earlier due entry is ignored."""
    clock = Clock()
    world = World(AuditRules(audit_delay=5), clock)
    account = world.add_account(Account("a", "s"))
    sig = world.create(account, fields("第一版"))
    world.resolve(sig, Status.REJECTED)
    clock.now = 3
    world.modify(account, sig.sign_id, fields("第二版"))
    clock.now = 6
    assert world.advance() == []
    clock.now = 8
    assert world.advance() == [sig]


def test_deleting_a_pending_signature_frees_the_account() -> None:
    """With its pending signature gone, the account may submit again."""
    world = World(AuditRules(audit_delay=5), Clock())
    account = world.add_account(Account("a", "s"))
    sig = world.create(account, fields("删掉"))
    with pytest.raises(ApiFault):
        world.create(account, fields("等等"))
    world.delete(account, sig.sign_id)
    assert world.create(account, fields("等等")).status is Status.PENDING


def test_scale_100k_signatures_over_2000_accounts() -> None:
    """100,000 signatures across 2,000 accounts resolve in one pass, each found by id."""
    clock = Clock()
    world = World(AuditRules(audit_delay=1, approval_rate=1.0, in_use_rate=0.0), clock)
    accounts = [world.add_account(Account(f"key{n}", "s")) for n in range(2000)]
    for round_ in range(50):
        for account in accounts:
            world.create(account, fields(f"签名{round_}"))
        clock.now += 1
        assert len(world.advance()) == len(accounts)
    assert len(world.signatures) == 100_000
    assert world.query(accounts[0], 10_001)["status"] == int(Status.APPROVED)
