"""The pipeline under real Dramatiq workers on Redis: concurrency, FIFO, crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Sequence

import pytest

from tests.conftest import delete_prefix
from tests.system import Resolver, dramatiq_system, isolated_settings, resolve
from worker.broker import build_broker
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.jsms.models import Status
from worker.runtime import Runtime
from worker.testing import wait_for

pytestmark = pytest.mark.slow


def test_many_jobs_many_accounts_never_two_audits_per_account(
    emulator_server: EmulatorServer, admin: EmulatorAdmin, broker: dict[str, str]
) -> None:
    """120 creates over 30 accounts with 8 worker threads: all approved, in FIFO order per
    account, and the API never answered 50103."""
    with dramatiq_system(emulator_server, admin, threads=8, **broker) as system, Resolver(system):
        expected = "RabbitmqBroker" if broker else "RedisBroker"
        assert type(system.runtime.broker).__name__ == expected
        accounts = [system.tenant(audit_delay=0.05) for _ in range(30)]
        submitted: dict[str, list[str]] = {a: [] for a in accounts}
        for n in range(4):
            for account in accounts:
                submitted[account].append(
                    system.runtime.jobs.create(account, f"签名{n}PASS").job_id
                )
        every = [j for ids in submitted.values() for j in ids]
        wait_for(
            lambda: all(system.state(j) == "approved" for j in every),
            timeout=60,
            what="every job approved",
        )
        pending_answers = sum(
            admin.stats(system.app_key(a))["audit_pending_answers"] for a in accounts
        )
        assert pending_answers == 0
        for account in accounts:
            order = [
                e["job_id"] for e in system.events(account) if e["type"] == "signature.submitted"
            ]
            assert order == submitted[account]


def test_a_crash_between_the_script_and_the_enqueue_loses_nothing(
    emulator_server: EmulatorServer, admin: EmulatorAdmin, broker: dict[str, str]
) -> None:
    """A producer that dies after accepting a job but before sending its message: the reaper
    sends it, and the job runs."""
    with dramatiq_system(emulator_server, admin, **broker) as system:
        account = system.tenant()

        def die(_ids: Sequence[str]) -> None:
            raise ConnectionError("process killed here")

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(system.runtime.dispatch, "jobs", die)
            with pytest.raises(ConnectionError):
                system.runtime.jobs.create(account, "没发出去")
        (record,) = system.runtime.jobs.find(account=account)
        assert record.state == "queued"
        assert system.elapse_outbox_grace() == 1
        assert system.runtime.reaper.tick().resent == 1
        wait_for(lambda: system.state(record.id) == "pending_audit", what="the job to run")


def test_a_crash_after_the_hand_off_before_the_enqueue_loses_nothing(
    emulator_server: EmulatorServer, admin: EmulatorAdmin, broker: dict[str, str]
) -> None:
    """Release hands the gate to the next job; if its message is never sent, the reaper sends
    it, and the account is not left blocked."""
    with dramatiq_system(emulator_server, admin, **broker) as system:
        account = system.tenant()
        first = system.runtime.jobs.create(account, "第一").job_id
        second = system.runtime.jobs.create(account, "第二").job_id
        wait_for(lambda: system.state(first) == "pending_audit")
        admin.force(system.runtime.jobs.require(first).sign_id or 0, status=1)
        with pytest.MonkeyPatch.context() as patch:
            # The process dies before sending.
            patch.setattr(system.runtime.dispatch, "jobs", lambda _ids: None)
            assert resolve(system.runtime, first, Status.APPROVED)
        # The gate is the second job's, and the outbox owns its message; its record says
        # parked until a run starts (the hand-off touches only keys it can declare).
        store = system.runtime.store
        assert store.redis.get(store.keys.gate(account)) == second
        assert system.state(second) == "parked"
        assert system.runtime.jobs.require(second).waiting_for == "start"
        assert system.elapse_outbox_grace() == 1
        system.runtime.reaper.tick()
        wait_for(lambda: system.state(second) == "pending_audit", what="the next job to run")


def test_a_killed_worker_process_loses_no_job_and_blocks_no_account(
    emulator_server: EmulatorServer, admin: EmulatorAdmin, broker: dict[str, str]
) -> None:
    """SIGKILL a `dramatiq worker.actors:setup` process while its create waits for the API's answer.
    The lease runs out, the reaper re-sends the job, a new worker (`signq worker`) finds the
    create may have gone through, retries through the gate, and settles it as unconfirmed: no
    duplicate, no job lost. The account's next job takes the gate at once and finds the unknown
    audit pending (blocked); once that audit resolves, its probe goes through."""
    settings = isolated_settings(emulator_server, **broker)
    job_broker = build_broker(settings)
    runtime = Runtime.build(settings, broker=job_broker)
    env = {
        **os.environ,
        **{f"SIGNQ_{k.upper()}": v for k, v in broker.items()},
        "SIGNQ_PREFIX": settings.prefix,
        "SIGNQ_API_URL": settings.api_url,
        "SIGNQ_LEASE_SECONDS": "2",
        "SIGNQ_HEARTBEAT_TIMEOUT": "2",
        "SIGNQ_PROBE_BACKOFF_INITIAL": "0.5",
        "SIGNQ_LOG_LEVEL": "WARNING",
    }
    worker = _spawn_worker(env)
    try:
        from tests.conftest import new_credentials  # noqa: PLC0415

        creds = new_credentials()
        admin.add_account(creds.app_key, creds.master_secret, audit_delay=3600)
        runtime.accounts.add("victim", creds.app_key, creds.master_secret)
        admin.set_faults(
            [{"kind": "slow", "seconds": 30, "count": 1, "operations": ["create"]}], creds.app_key
        )
        first = runtime.jobs.create("victim", "被杀死").job_id
        second = runtime.jobs.create("victim", "排队的").job_id
        wait_for(lambda: _state(runtime, first) == "submitting", what="the create in flight")
        # The slow fault makes the signature, then holds the answer: the create has landed.
        wait_for(lambda: admin.stats(creds.app_key)["signatures"] == 1, what="the create held")
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        worker = _spawn_worker(env, via_signq=True)

        def picked_up_again() -> bool:
            runtime.reaper.tick()
            return _state(runtime, first) != "submitting"

        wait_for(picked_up_again, timeout=30, what="the killed job to be picked up again")
        wait_for(lambda: _state(runtime, first) == "unconfirmed", what="unconfirmed")
        assert admin.stats(creds.app_key)["signatures"] == 1
        assert admin.stats(creds.app_key)["duplicate_creates"] == 0
        wait_for(lambda: runtime.accounts.require("victim").blocked, what="the probe's 50103")
        assert _state(runtime, second) == "parked"
        (sign_id,) = admin.signatures(creds.app_key)
        runtime.jobs.confirm(first, sign_id)
        admin.force(sign_id, status=1)
        resolve(runtime, first, Status.APPROVED)

        def probed() -> bool:
            runtime.reaper.tick()
            return _state(runtime, second) == "pending_audit"

        wait_for(probed, what="the next job")
    finally:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
        job_broker.close()
        runtime.close()
        delete_prefix(settings.redis_url, settings.prefix)


def _spawn_worker(env: dict[str, str], *, via_signq: bool = False) -> subprocess.Popen[bytes]:
    """`dramatiq worker.actors:setup`, or `signq worker`: the same worker either way."""
    if via_signq:
        argv = [sys.executable, "-m", "worker", "worker", "--processes", "1", "--threads", "2"]
    else:
        argv = [
            sys.executable,
            "-m",
            "dramatiq",
            "worker.actors:setup",
            "--processes",
            "1",
            "--threads",
            "2",
            "--skip-logging",
        ]
    return subprocess.Popen(
        argv,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _state(runtime: Runtime, job_id: str) -> str:
    return str(runtime.store.redis.hget(runtime.store.keys.job(job_id), "state"))
