"""The whole lifecycle with real workers, the real scheduler and the emulator's audit clock."""

from __future__ import annotations

import threading

import pytest

from tests.system import dramatiq_system
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.testing import wait_for

pytestmark = pytest.mark.slow


def test_full_lifecycle_with_the_exact_event_sequence(
    emulator_server: EmulatorServer, admin: EmulatorAdmin, broker: dict[str, str]
) -> None:
    """create → pending → approved; create → rejected → modify → approved; delete; a delete
    refused because the signature is the account's default: each step's events, in order."""
    with dramatiq_system(emulator_server, admin, threads=4, **broker) as system:
        stop = threading.Event()
        scheduler = threading.Thread(target=system.runtime.scheduler("t").run, args=(stop,))
        scheduler.start()
        try:
            account = system.tenant(audit_delay=0.2)
            jobs = system.runtime.jobs

            def done(job_id: str, state: str) -> None:
                wait_for(
                    lambda: system.state(job_id) == state, timeout=20, what=f"job {job_id} {state}"
                )

            first = jobs.create(account, "甲PASS").job_id
            done(first, "approved")
            second = jobs.create(account, "乙REJ").job_id
            done(second, "rejected")
            rejected_id = jobs.require(second).sign_id or 0
            third = jobs.modify(account, rejected_id, "乙PASS").job_id
            done(third, "approved")
            default_id = jobs.require(first).sign_id or 0
            refused = jobs.delete(account, default_id).job_id
            done(refused, "failed")
            removed = jobs.delete(account, rejected_id).job_id
            done(removed, "deleted")
        finally:
            stop.set()
            scheduler.join(timeout=10)
        sequence = [(e["type"], e.get("job_id")) for e in system.events(account)]
        assert sequence == [
            ("job.accepted", first),
            ("signature.submitted", first),
            ("signature.approved", first),
            ("job.accepted", second),
            ("signature.submitted", second),
            ("signature.rejected", second),
            ("job.accepted", third),
            ("signature.submitted", third),
            ("signature.approved", third),
            ("job.accepted", refused),
            ("job.failed", refused),
            ("job.accepted", removed),
            ("signature.deleted", removed),
        ]
        failed = system.events(account)[10]
        assert failed["error"]["code"] == 50105
        rejected = system.events(account)[5]
        assert rejected["previous_status"] == 0
        assert "reason" not in rejected  # the query API has no reason; only callbacks carry it
        assert admin.stats(system.app_key(account))["audit_pending_answers"] == 0
