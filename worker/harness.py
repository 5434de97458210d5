"""The in-process system: signq's actors on a real broker, a Dramatiq worker pool and the
scheduler loop in this process, torn down in order. The demo, the benchmarks and the tests run
on it (``worker.testing`` re-exports it for tests of your own)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dramatiq

from worker import actors
from worker.broker import build_broker
from worker.runtime import Runtime

if TYPE_CHECKING:
    from dramatiq import Broker, Worker
    from redis import Redis

    from worker.jsms.client import JsmsClient
    from worker.settings import Settings


@dataclass
class InProcess:
    """A running system in this process: its runtime, broker and worker pool."""

    runtime: Runtime
    broker: Broker
    worker: Worker | None


@contextmanager
def in_process(
    settings: Settings,
    *,
    threads: int = 8,
    scheduler: str | None = None,
    client: JsmsClient | None = None,
    redis_client: Redis | None = None,
    broker_client: Redis | None = None,
) -> Iterator[InProcess]:
    """signq's actors on a real broker with a pool of ``threads`` Dramatiq worker threads in
    this process (none: the messages wait in Redis), and with a ``scheduler`` node name its
    scheduler loop in a thread. On leaving: the loop and the workers stop, every key under the
    settings' prefix is deleted, and the connections close — even when the body raised.

    ``client`` replaces the JSMS client (a test's faster retries); ``redis_client`` and
    ``broker_client`` put the state and the broker on given connections (the demo's
    fakeredis fallback).
    """
    broker = build_broker(settings, broker_client)
    actors.declare(broker, settings)
    runtime = Runtime.build(settings, broker=broker, client=client, redis_client=redis_client)
    actors.set_runtime(runtime)
    worker = (
        dramatiq.Worker(broker, worker_threads=threads, worker_timeout=settings.worker_timeout_ms)
        if threads
        else None
    )
    stop = threading.Event()
    loop = (
        threading.Thread(target=runtime.scheduler(scheduler).run, args=(stop,), daemon=True)
        if scheduler
        else None
    )
    try:
        if worker:
            worker.start()
        if loop:
            loop.start()
        yield InProcess(runtime, broker, worker)
    finally:
        stop.set()
        if loop:
            loop.join(timeout=10)
        if worker:
            worker.stop()
        broker.close()
        actors.set_runtime(None)
        delete_prefix(runtime.store.redis, settings.prefix)
        runtime.close()


def delete_prefix(client: Redis, prefix: str) -> int:
    """Delete every key under ``prefix:`` (a test's or a demo's own, never anything else), in
    batches; returns how many."""
    batch = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    for start in range(0, len(batch), 1000):
        client.delete(*batch[start : start + 1000])
    return len(batch)
