"""The tracking commands as a user runs them: track, cleanup, scheduler, callbacks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator

import httpx
import pytest
import redis

from tests.conftest import delete_prefix
from worker.emulator.server import free_port
from worker.testing import CliResult, answers, run_cli, wait_for


@pytest.fixture
def env(redis_url: str) -> Iterator[dict[str, str]]:
    """An environment on a fresh prefix with one account registered."""
    prefix = f"signqcli-{uuid.uuid4().hex[:6]}"
    environment = {
        **os.environ,
        "SIGNQ_PREFIX": prefix,
        "SIGNQ_REDIS_URL": redis_url,
        "SIGNQ_TICK_SECONDS": "0.2",
        "SIGNQ_LEADER_TTL_SECONDS": "2",
    }
    add = subprocess.run(
        [sys.executable, "-m", "worker", "accounts", "add", "acme", "--app-key", "k" * 24],
        input="secret\n",
        text=True,
        env=environment,
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert add.returncode == 0, add.stderr
    yield environment
    delete_prefix(redis_url, prefix)


def signq(env: dict[str, str], *args: str) -> CliResult:
    """Run a signq command (in this process)."""
    return run_cli(args, env=env)


def test_track_and_cleanup_dry_run(env: dict[str, str]) -> None:
    """`track` registers ids; a bad id is refused by name; `cleanup --dry-run` changes nothing."""
    tracked = signq(env, "track", "--account", "acme", "--sign-id", "10001", "--sign-id", "10002")
    assert "tracking 2 signature(s), 2 new" in tracked.stdout
    bad = signq(env, "track", "--account", "acme", "--sign-id", "zero")
    assert bad.returncode == 2
    assert "sign_id: must be a whole number from 1 to" in bad.stderr
    dry = signq(env, "cleanup", "--dry-run", "--older-than", "0s")
    assert dry.returncode == 0
    assert "0 candidate(s)" in dry.stdout  # statuses are not known before the first poll
    wrong = signq(env, "cleanup", "--older-than", "soon")
    assert wrong.returncode == 2
    assert "--older-than: an age looks like" in wrong.stderr


def test_scheduler_leads_and_resigns_on_sigterm(env: dict[str, str], redis_url: str) -> None:
    """`signq scheduler` takes the lease and ticks; on SIGTERM it gives the lease up."""
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "scheduler", "--node", "cli-node"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    leader = f"{env['SIGNQ_PREFIX']}:scheduler:leader"
    try:
        wait_for(
            lambda: process.poll() is None and client.get(leader) == "cli-node",
            what="the scheduler to take the lease",
        )
        ticks = f"{env['SIGNQ_PREFIX']}:scheduler:ticks"
        wait_for(lambda: int(client.hget(ticks, "count") or 0) >= 2, timeout=10, what="2 ticks")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert client.get(leader) is None
    finally:
        if process.poll() is None:
            process.kill()
        client.close()


def test_callbacks_command_serves_the_receiver(env: dict[str, str]) -> None:
    """`signq callbacks --port N` answers the URL check."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "worker", "callbacks", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}/callbacks/acme?echostr=x1y2z3w4"
        wait_for(lambda: answers(url, process), what="the receiver")
        assert httpx.get(url, timeout=2).text == "x1y2z3w4"
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_cleanup_flags_are_named_by_the_command_line(env: dict[str, str]) -> None:
    """The policy's own errors say what is wrong; the CLI names the flag that carried it."""
    bad_age = signq(env, "cleanup", "--dry-run", "--older-than", "3w")
    assert (bad_age.returncode, bad_age.stderr.strip()) == (
        2,
        "signq: --older-than: an age looks like 30d, 12h, 90m or 45s, got '3w'",
    )
    bad_status = signq(env, "cleanup", "--dry-run", "--status", "pending")
    assert bad_status.stderr.strip() == (
        "signq: --status: statuses may be approved and rejected only, got 'pending'"
    )
    again = run_cli(["accounts", "add", "acme", "--app-key", "k" * 24], env=env, stdin="s\n")
    assert (
        again.stderr.strip()
        == "signq: account acme exists; use --replace to change its credentials"
    )
