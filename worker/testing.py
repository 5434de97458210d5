"""Test helpers signq ships, as Dramatiq ships StubBroker and structlog its testing module:
an in-process system (broker, workers, scheduler, teardown), dispatchers that record what is
sent, a clock that moves only when slept on, and a bounded wait. The tests, the demo, the
benchmarks and your own tests of code around signq share them."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from worker.harness import InProcess, delete_prefix, in_process
from worker.settings import Settings
from worker.store import Store

__all__ = [
    "CliResult",
    "FakeClock",
    "InProcess",
    "InlineDispatcher",
    "RecordingDispatcher",
    "answers",
    "delete_prefix",
    "delete_rabbitmq_queues",
    "in_process",
    "rabbitmq_answers",
    "run_cli",
    "wait_for",
]


@dataclass
class RecordingDispatcher:
    """Records what would be sent instead of sending it: run the jobs yourself (``sent``), in
    your own order. Job ids leave the outbox as a real send moves them on."""

    store: Store | None = None
    sent: list[str] = field(default_factory=list)
    polls: list[list[str]] = field(default_factory=list)
    reaps: list[bool] = field(default_factory=list)
    cleanups: int = 0
    deliveries: list[str] = field(default_factory=list)

    def jobs(self, job_ids: Sequence[str]) -> None:
        """Keep the job ids; a real send leaves each in the outbox only as a safety net."""
        self.sent.extend(job_ids)
        if self.store is not None and job_ids:
            self.store.redis.zrem(self.store.keys.outbox(), *job_ids)

    def poll(self, members: list[str]) -> None:
        """Keep the chunk."""
        self.polls.append(members)

    def reap(self, full: bool) -> None:
        """Keep the pass."""
        self.reaps.append(full)

    def cleanup(self) -> None:
        """Count it."""
        self.cleanups += 1

    def webhooks(self, delivery_ids: Sequence[str]) -> None:
        """Keep the delivery ids."""
        self.deliveries.extend(delivery_ids)


@dataclass
class InlineDispatcher(RecordingDispatcher):
    """Runs polls, reaper passes and cleanups at once, in the caller's thread (a scheduler in a
    test); job messages are recorded."""

    run_poll: Callable[[list[str]], object] = lambda _members: None
    run_reap: Callable[[bool], object] = lambda _full: None

    def poll(self, members: list[str]) -> None:
        """Poll now."""
        super().poll(members)
        self.run_poll(members)

    def reap(self, full: bool) -> None:
        """Reap now."""
        super().reap(full)
        self.run_reap(full)


class FakeClock:
    """A ``worker.clock.Clock`` that moves only when slept on: waits cost a test no real time, and
    the test reads every wait that was asked for."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record the wait and let that much time pass."""
        self.slept.append(seconds)
        self.now += seconds


def wait_for(
    predicate: Callable[[], bool],
    timeout: float = 20.0,
    what: str = "condition",
    *,
    interval: float = 0.02,
) -> None:
    """Poll every ``interval`` seconds until the predicate holds, at most ``timeout`` seconds
    (for what other processes or threads do; time a test controls itself is a FakeClock's)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def answers(url: str, process: subprocess.Popen[Any] | None = None) -> bool:
    """Whether an HTTP GET of ``url`` gets any answer (a server that is up), for ``wait_for``;
    raises at once if the ``process`` that should serve it has exited."""
    if process is not None and process.poll() is not None:
        raise AssertionError(f"the process serving {url} exited with {process.returncode}")
    try:
        httpx.get(url, timeout=1)
    except httpx.TransportError:
        return False
    return True


def rabbitmq_answers(url: str) -> bool:
    """Whether something accepts connections at an amqp:// URL's host and port (1 s)."""
    import socket  # noqa: PLC0415
    from urllib.parse import urlsplit  # noqa: PLC0415

    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5672), 1):
            return True
    except OSError:
        return False


def delete_rabbitmq_queues(settings: Settings) -> None:
    """Delete every RabbitMQ queue signq declares for these settings (with their delay and
    dead-letter queues): a test's or a benchmark's own, named by its SIGNQ_QUEUE."""
    import pika  # type: ignore[import-untyped]  # noqa: PLC0415
    from dramatiq.common import dq_name, xq_name  # noqa: PLC0415

    from worker.broker import queues  # noqa: PLC0415

    connection = pika.BlockingConnection(pika.URLParameters(settings.broker_url))
    try:
        channel = connection.channel()
        for name in queues(settings):
            for each in (name, dq_name(name), xq_name(name)):
                channel.queue_delete(each)
    finally:
        connection.close()


@dataclass(frozen=True)
class CliResult:
    """What a `signq` command did: its exit code and what it printed."""

    returncode: int
    stdout: str
    stderr: str


def run_cli(
    argv: Sequence[str], *, env: dict[str, str] | None = None, stdin: str = ""
) -> CliResult:
    """Run `signq ARGV` in this process, as a shell would (environment, stdin, captured output),
    and put the process's environment, streams and logging back afterwards."""
    import io  # noqa: PLC0415
    import logging  # noqa: PLC0415
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415
    from contextlib import redirect_stderr, redirect_stdout  # noqa: PLC0415

    import structlog  # noqa: PLC0415

    from worker import cli  # noqa: PLC0415

    saved_env = dict(os.environ)
    root = logging.getLogger()
    saved_logging = (root.handlers[:], root.level)
    saved_stdin = sys.stdin
    out, err = io.StringIO(), io.StringIO()
    try:
        if env is not None:
            os.environ.clear()
            os.environ.update(env)
        sys.stdin = io.StringIO(stdin)
        with redirect_stdout(out), redirect_stderr(err):
            code = cli.main(list(argv))
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.stdin = saved_stdin
        root.handlers[:], root.level = saved_logging
        structlog.reset_defaults()
    return CliResult(code, out.getvalue(), err.getvalue())
