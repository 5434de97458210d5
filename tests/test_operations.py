"""Seeing and fixing: status, dead letters, retrying jobs, and what the logs carry."""

from __future__ import annotations

import functools
import io
import json
import os
from collections.abc import Callable

import pytest

from tests.conftest import delete_prefix
from tests.system import System, dramatiq_system, inline_scheduler, isolated_settings
from worker.broker import POLL, build_broker
from worker.dlq import DeadLetters
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.errors import JobError
from worker.jsms import SignRequest
from worker.runtime import Runtime
from worker.status import collect
from worker.testing import CliResult, run_cli, wait_for


def signq(prefix: str, *args: str, broker: dict[str, str] | None = None) -> CliResult:
    """Run a signq command on a prefix (in this process), on the given job broker."""
    chosen = {f"SIGNQ_{k.upper()}": v for k, v in (broker or {}).items()}
    return run_cli(args, env={**os.environ, **chosen, "SIGNQ_PREFIX": prefix})


def test_status_reports_queues_jobs_gates_accounts_and_scheduler(
    emulator_server: EmulatorServer, admin: EmulatorAdmin, broker: dict[str, str]
) -> None:
    """status --json: a real queue depth, jobs by state, gates, parked, paused and blocked
    accounts, tracked signatures, the scheduler's last tick, the events stream."""
    settings = isolated_settings(emulator_server, **broker)
    job_broker = build_broker(settings)
    runtime = Runtime.build(settings, broker=job_broker)
    try:
        system = System(runtime, admin)
        busy, idle = system.tenant(), system.tenant()
        for n in range(3):
            runtime.jobs.create(busy, f"签名{n}")
        runtime.accounts.pause(idle, "rotating keys")
        runtime.tracker.track(idle, [10_001, 10_002])
        inline_scheduler(system, "node-s").lead()
        runtime.store.redis.hset(runtime.store.keys.ticks(), mapping={"at": 1, "due": 2, "ms": 3})
        state = json.loads(signq(settings.prefix, "status", "--json", broker=broker).stdout)
        assert state == collect(runtime) | {"scheduler": state["scheduler"]}
        assert state["queues"][settings.queue] == {"ready": 1, "delayed": 0, "dead_letters": 0}
        assert state["jobs"]["by_state"]["queued"] == 1
        assert state["parked_jobs"] == 2
        assert state["accounts"]["audit_pending"] == 1
        assert state["accounts"]["paused"] == [idle]
        assert state["signatures"]["tracked"] == 2
        assert state["signatures"]["by_status"]["unknown"] == 2
        assert state["scheduler"]["leader"] == "node-s"
        assert state["events"]["length"] >= 5
        table = signq(settings.prefix, "status", broker=broker)
        assert table.returncode == 0
        assert "parked jobs" in table.stdout
    finally:
        job_broker.close()
        runtime.close()
        delete_prefix(settings.redis_url, settings.prefix)


def test_dead_letters_list_show_retry_and_purge(
    emulator_server: EmulatorServer, admin: EmulatorAdmin, broker: dict[str, str]
) -> None:
    """A poll message that fails is dead-lettered by Dramatiq; dlq lists and shows it, retry
    sends it again (it fails again, here), purge empties the queue."""
    with dramatiq_system(emulator_server, admin, threads=2, **broker) as system:
        prefix = system.settings.prefix
        cli = functools.partial(signq, prefix, broker=broker)
        system.runtime.dispatch.poll(["not-a-member"])
        letters = DeadLetters(system.runtime)
        wait_for(lambda: len(letters.all()) == 1, what="a dead letter")
        (letter,) = letters.all()
        assert (letter.actor, letter.args) == (POLL, [["not-a-member"]])
        listed = [json.loads(line) for line in cli("dlq", "list", "--json").stdout.splitlines()]
        assert [row["id"] for row in listed] == [letter.id]
        shown = json.loads(cli("dlq", "show", letter.id).stdout)
        assert (shown["actor_name"], shown["args"]) == (POLL, [["not-a-member"]])
        retried = cli("dlq", "retry", letter.id)
        assert f"{letter.id}: sent again to {POLL}" in retried.stdout
        wait_for(
            lambda: len(letters.all()) == 1 and letters.all()[0].id != letter.id,
            what="the retried message to fail again",
        )
        missing = cli("dlq", "retry", "no-such-id")
        assert missing.returncode == 2
        assert "no dead letter(s): no-such-id" in missing.stderr
        assert "1 dead letter(s) purged" in cli("dlq", "purge").stdout
        assert letters.all() == []


def test_jobs_retry_reopens_a_failed_job(system: System) -> None:
    """A failed job runs again; it must wait for its gate like any submission."""
    account = system.tenant()
    failed = system.runtime.jobs.modify(account, 999_999, "改不了").job_id
    system.drain()
    assert system.state(failed) == "failed"
    holder = system.runtime.jobs.create(account, "占着").job_id
    system.drain()
    assert system.runtime.jobs.retry(failed) == "parked"
    record = system.runtime.jobs.require(failed)
    assert (record.error, record.finished_at, record.attempts) == (None, None, 0)
    assert system.runtime.store.redis.ttl(system.runtime.store.keys.job(failed)) == -1
    with pytest.raises(JobError, match="only a failed or cancelled job is retried"):
        system.runtime.jobs.retry(holder)


@pytest.mark.slow
def test_logs_carry_the_message_context_and_no_secret(
    emulator_server: EmulatorServer, admin: EmulatorAdmin, log_capture: Callable[[str], io.StringIO]
) -> None:
    """Every line of a message's handling carries actor, message id, job id, account and sign
    id; app keys are masked; the master secret appears nowhere; library lines are JSON too."""
    buffer = log_capture("INFO")
    with dramatiq_system(emulator_server, admin) as system:
        account = system.tenant()
        app_key = system.app_key(account)
        secret = system.credentials(account).master_secret
        admin.set_faults([{"kind": "error", "count": 1, "operations": ["query"]}], app_key)
        created = system.runtime.jobs.create(account, "日志").job_id
        queried = system.runtime.jobs.query(account, 424_242).job_id
        wait_for(lambda: system.state(created) == "pending_audit")
        wait_for(lambda: system.state(queried) == "failed")
    lines = [json.loads(line) for line in buffer.getvalue().splitlines() if line.startswith("{")]
    submitted = next(line for line in lines if line["event"] == "signature_submitted")
    assert submitted["actor"] == "signq.run_job"
    assert submitted["job_id"] == created
    assert submitted["account"] == account
    assert isinstance(submitted["sign_id"], int)
    assert submitted["message_id"]
    retry = next(line for line in lines if line["event"] == "jsms_retry")
    assert retry["app_key"] == f"{app_key[:4]}…{app_key[-4:]}"
    assert retry["job_id"] == queried
    assert any(line["logger"].startswith("dramatiq") for line in lines)
    assert secret not in buffer.getvalue()
    assert app_key not in buffer.getvalue()


def test_confirm_checks_the_sign_id_at_the_api_first(system: System) -> None:
    """jobs confirm refuses a sign id the account does not have, and one whose sign is not the
    job's; the right one confirms and records what the API says of it."""
    account = system.tenant()
    other = system.tenant()
    system.admin.set_faults([{"kind": "drop", "after": True, "count": 1}], system.app_key(account))
    job = system.runtime.jobs.create(account, "要确认的").job_id
    assert system.drain() == ["unconfirmed"]
    (right,) = system.admin.signatures(system.app_key(account))
    foreign = system.runtime.client.create(system.credentials(other), SignRequest("别人的"))
    tracker = system.runtime.tracker
    with pytest.raises(JobError, match="not a signature of account"):
        tracker.confirm_checked(job, foreign)
    with pytest.raises(JobError, match="not a signature of account"):
        tracker.confirm_checked(job, 10**15)
    system.admin.force(right, status=1)
    mine = system.runtime.client.create(system.credentials(account), SignRequest("另一个"))
    with pytest.raises(JobError, match="but job"):
        tracker.confirm_checked(job, mine)
    assert system.state(job) == "unconfirmed"
    tracker.confirm_checked(job, right)
    record = system.runtime.jobs.require(job)
    assert (record.state, record.sign_id) == ("approved", right)
