"""What the README and the deployment files promise, run for real."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import redis

from tests.system import System
from worker.emulator.server import load_accounts
from worker.jsms.models import Status
from worker.testing import wait_for

ROOT = Path(__file__).resolve().parent.parent


def audited(system: System, account: str, sign: str, status: Status) -> int:
    """A create run to pending audit, its audit resolved at the API and seen by a poll; returns
    the sign id."""
    job = system.runtime.jobs.create(account, sign).job_id
    system.drain()
    sign_id = system.runtime.jobs.require(job).sign_id or 0
    system.admin.force(sign_id, status=int(status))
    system.runtime.tracker.poll_one(f"{account}:{sign_id}")
    system.drain()
    return sign_id


def readme_consumer() -> str:
    """The consumer example exactly as the README shows it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- consumer-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "the README lost its consumer example"
    return match.group(1)


def test_the_readme_consumer_enables_on_approval_and_resubmits_a_fix(
    system: System, tmp_path: Path
) -> None:
    """Run the README's consumer as its own process: it starts from new events (no history
    replayed), an approval enables the tenant, a rejection with a known fix is resubmitted as
    a modify once, and Ctrl-C stops it cleanly, without a traceback."""
    account = system.tenant()
    audited(system, account, "旧的PASS", Status.APPROVED)
    script = tmp_path / "consumer.py"
    script.write_text(
        readme_consumer().replace(
            "FIXES: dict[tuple[str, str], str] = {}", f"FIXES = {{({account!r}, '坏的'): '好了'}}"
        ),
        encoding="utf-8",
    )
    env = {**os.environ, "SIGNQ_PREFIX": system.settings.prefix}
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        store = system.runtime.store
        wait_for(
            lambda: (
                bool(store.redis.exists(store.keys.events()))
                and any(
                    g["name"] == "tenant-backend"
                    for g in store.redis.xinfo_groups(store.keys.events())
                )
            ),
            what="the consumer's group",
        )
        audited(system, account, "好的PASS", Status.APPROVED)
        bad_id = audited(system, account, "坏的", Status.REJECTED)
        wait_for(
            lambda: any(r.op == "modify" for r in system.runtime.jobs.find(account=account)),
            what="the resubmission",
        )
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err.decode()
    assert b"Traceback" not in err
    modifies = [r for r in system.runtime.jobs.find(account=account) if r.op == "modify"]
    assert [(r.sign_id, r.sign) for r in modifies] == [(bad_id, "好了")]
    printed = out.decode()
    assert f"enable SMS for {account} signed 【好的PASS】" in printed
    assert "旧的PASS" not in printed  # history before the group began is not replayed


def test_deploy_accounts_file_feeds_both_the_emulator_and_signq(system: System) -> None:
    """deploy/accounts.csv, used by docker-compose, is read by the emulator and by import."""
    path = ROOT / "deploy" / "accounts.csv"
    emulator_accounts = load_accounts(path)
    assert {a["app_key"] for a in emulator_accounts} == {
        "demo0000000000000000app1",
        "demo0000000000000000app2",
    }
    assert system.runtime.accounts.import_csv(path) == 2
    assert [a.name for a in system.runtime.accounts.all()] == ["demo-1", "demo-2"]


def test_every_setting_is_in_the_readme_table() -> None:
    """The README's configuration table names every environment variable Settings reads."""
    from dataclasses import fields  # noqa: PLC0415

    from worker.settings import Settings  # noqa: PLC0415

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    table = readme[readme.index("## Configuration") :]
    # otel_exporter is OpenTelemetry's own OTEL_TRACES_EXPORTER; redis_explicit is derived.
    derived = ("redis_explicit", "otel_exporter")
    names = [f"SIGNQ_{f.name.upper()}" for f in fields(Settings) if f.name not in derived]
    names.append("OTEL_TRACES_EXPORTER")
    missing = [name for name in names if f"`{name}`" not in table]
    assert missing == []


def test_the_readme_testing_example_runs_as_shown(redis_url: str) -> None:
    """The README's example of worker.testing, run exactly as shown (on the session's Redis):
    a signature goes through an in-process system to approval, and nothing of its prefix is
    left behind."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- testing-example -->\n```python\n(.*?)```", text, re.S)
    assert match, "the README lost its testing example"
    prefix = f"myapp-test-{uuid.uuid4().hex[:6]}"
    code = match.group(1).replace('prefix="myapp-test"', f"prefix={prefix!r}")
    assert code != match.group(1)
    namespace: dict[str, object] = {}
    exec(compile(code, "README.md:testing-example", "exec"), namespace)  # noqa: S102
    client = redis.Redis.from_url(redis_url)
    try:
        assert list(client.scan_iter(match=f"{prefix}:*")) == []
    finally:
        client.close()
