"""The demo, as a user runs it on a fresh machine: embedded Redis, everything in one command."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_the_demo_command_runs_end_to_end_on_an_embedded_redis() -> None:
    """`signq demo` as a process (the entry point's smoke test), with no SIGNQ_REDIS_URL: it
    starts its own redis-server, runs, prints its summary and exits 0 (the counts are
    checked on the returned outcome below)."""
    env = {k: v for k, v in os.environ.items() if k not in ("SIGNQ_REDIS_URL", "REDIS_URL")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "demo",
            "--tenants",
            "4",
            "--signatures",
            "20",
            "--reject-every",
            "5",
            "--audit-delay",
            "0.2",
            "--no-live",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=180,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
    assert "redis: embedded redis-server on redis://127.0.0.1:" in out

    assert "signatures onboarded" in out
    assert "OK: nothing lost" in out


def test_demo_outcome_counts_every_signature() -> None:
    """The demo in-process on its embedded Redis: every signature onboarded and finished, the
    rejected ones fixed and approved, cleanup deleting the unused one, nothing lost, no 50103;
    read from the outcome the demo returns, not from its printed table."""
    import io  # noqa: PLC0415
    import re  # noqa: PLC0415
    import threading  # noqa: PLC0415

    import httpx  # noqa: PLC0415
    from rich.console import Console  # noqa: PLC0415

    from worker import demo  # noqa: PLC0415
    from worker.settings import Settings  # noqa: PLC0415

    options = demo.DemoOptions(
        tenants=4,
        signatures=20,
        reject_every=5,
        audit_delay=0.2,
        timeout=120,
        live=False,
        dashboard=True,
    )
    out = io.StringIO()
    seen: list[int] = []

    def open_dashboard() -> None:
        # While the demo runs, its dashboard answers at the printed URL (token included).
        for _ in range(600):
            found = re.search(r"dashboard: (http://127\.0\.0\.1:\d+/\?token=\S+)", out.getvalue())
            if found:
                with httpx.Client(follow_redirects=True, timeout=5) as http:
                    page = http.get(found.group(1))
                    seen.extend([page.status_code, int("Overview" in page.text)])
                return
            threading.Event().wait(0.05)

    visitor = threading.Thread(target=open_dashboard)
    visitor.start()
    outcome = demo.run(Settings.from_env({}), options, Console(file=out, width=200))
    visitor.join(timeout=30)
    assert seen == [200, 1], out.getvalue()
    assert "redis: embedded redis-server on redis://127.0.0.1:" in out.getvalue()
    assert outcome.ok, out.getvalue()
    assert outcome.onboarded == 23
    assert outcome.fixed == 4
    assert outcome.approved == 19
    assert outcome.deleted == 1
    # The one in use is left alone by its job; the default either never becomes a job (a
    # poll told signq it is the default) or is refused by the API (50105) when only a push
    # reported its audit: which came first is the race of the demo's own scheduler.
    assert outcome.refused in (1, 2)
    assert (outcome.unfinished, outcome.lost, outcome.failed) == (0, 0, 0)
    assert outcome.audit_pending_answers == 0


def test_demo_refuses_nonsense_sizes() -> None:
    """Sizes that make no sense are refused with a clear error."""
    result = subprocess.run(
        [sys.executable, "-m", "worker", "demo", "--tenants", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "--tenants must be at least 1" in result.stderr


def test_demo_falls_back_to_fakeredis_where_no_redis_server_can_run(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With no redis-server binary to run and no SIGNQ_REDIS_URL, the demo runs whole on an
    in-process fakeredis (Lua through lupa), and still loses nothing."""
    import io  # noqa: PLC0415

    from rich.console import Console  # noqa: PLC0415

    from worker import demo  # noqa: PLC0415
    from worker.errors import EmbeddedRedisError  # noqa: PLC0415
    from worker.settings import Settings  # noqa: PLC0415

    def no_binary(**_: object) -> str:
        raise EmbeddedRedisError("no redis-server found")

    monkeypatch.setattr(demo, "find_redis_server", no_binary)
    out = io.StringIO()
    settings = Settings.from_env({})  # no SIGNQ_REDIS_URL
    options = demo.DemoOptions(
        tenants=2, signatures=6, reject_every=3, audit_delay=0.2, threads=4, timeout=60, live=False
    )
    outcome = demo.run(settings, options, Console(file=out, width=100))
    assert "redis: fakeredis in this process (no redis-server found)" in out.getvalue()
    assert outcome.ok
    assert (outcome.onboarded, outcome.fixed, outcome.lost, outcome.audit_pending_answers) == (
        9,
        2,
        0,
        0,
    )
