"""The demo, as a user runs it on a fresh machine: embedded Redis, everything in one command."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_end_to_end_with_zero_loss_and_zero_50103() -> None:
    """`signq demo` at a small size, with no SIGNQ_REDIS_URL: it starts its own redis-server,
    onboards, fixes rejections, cleans up, and reports nothing lost and no 50103."""
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

    def count(label: str) -> int:
        match = re.search(rf"{re.escape(label)}\s*│\s*(\d+)", out)
        assert match, f"{label!r} not in the summary"
        return int(match.group(1))

    assert count("signatures onboarded") == 23
    assert count("rejected, fixed, then approved") == 4
    assert count("approved") == 19
    assert count("deleted by cleanup") == 1
    # The one in use is left alone by its job; the default either never becomes a job (a
    # poll told signq it is the default) or is refused by the API (50105) when only a push
    # reported its audit: which came first is the race of the demo's own scheduler.
    assert count("left alone by cleanup (in use, or the default)") in (1, 2)
    assert count("unfinished when the time ran out") == 0
    assert count("lost") == 0
    assert count("failed") == 0
    assert count("50103 answers (must be 0)") == 0
    assert "OK: nothing lost" in out


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
