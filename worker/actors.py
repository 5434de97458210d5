"""Dramatiq actors: thin, taking ids, calling the pipeline.

Importing this module does nothing but define them: no environment read, no logging set up, no
global broker. ``setup()`` builds the broker from the environment and declares the actors on it,
once per process — Dramatiq's CLI calls it (``dramatiq worker.actors:setup``), as it calls a
broker-setup callable; embedders and tests ``declare()`` the actors on a broker of their own.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import dramatiq
import redis
import structlog
from dramatiq import Actor, Broker, Middleware

from worker import logs, metrics
from worker.attempt import RetryLater
from worker.broker import (
    CLEANUP,
    JOB_EXHAUSTED,
    POLL,
    REAP,
    RUN_JOB,
    WEBHOOK,
    build_broker,
    track_queue,
    webhook_queue,
)
from worker.errors import USAGE, LayoutError
from worker.runtime import Runtime
from worker.settings import Settings

log = structlog.get_logger(__name__)
UNEXPECTED_ERROR_RETRIES = 5
_runtime: Runtime | None = None
_broker: Broker | None = None
_settings: Settings | None = None
_lock = threading.RLock()
# Redis not answering (a restart, a failover): the work is owned by state in Redis (the outbox,
# a lease, the due set), so a message that meets this is retried or dropped, never dead-lettered.
_REDIS_DOWN = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)
REDIS_DOWN_RETRY_MS = 2000


def runtime() -> Runtime:
    """This process's runtime, built once under a lock (``Boot`` builds it before the first
    message; worker threads never race to build it)."""
    global _runtime  # noqa: PLW0603 - one runtime per worker process
    if _runtime is None:
        with _lock:
            if _runtime is None:
                broker = setup()
                assert _settings is not None  # noqa: S101 - setup() set it
                _runtime = Runtime.build(_settings, broker=broker)
    return _runtime


def set_runtime(value: Runtime | None) -> None:
    """Use this runtime in this process (tests point it at the emulator)."""
    global _runtime  # noqa: PLW0603 - one runtime per worker process
    _runtime = value


class Boot(Middleware):
    """Builds the process's runtime and metrics before its worker threads take any message."""

    def before_worker_boot(self, broker: Broker, worker: Any) -> None:
        """After the fork, before the threads. A Redis holding data in a key layout this
        signq does not know stops the process before it takes a message (`signq migrate`)."""
        rt = runtime()
        try:
            rt.store.check_layout()
        except LayoutError as exc:
            log.error("key_layout_refused", error=str(exc))
            os._exit(USAGE)
        except _REDIS_DOWN:
            pass  # Redis may come up after the workers: Dramatiq waits for it
        metrics.metrics()


def setup() -> Broker:
    """This process's broker, built from the environment on the first call: logging set up,
    the metrics middleware when metrics are on, the boot middleware, the actors declared, and
    the broker made Dramatiq's global one. ``dramatiq worker.actors:setup`` calls it in each
    worker process."""
    global _broker, _settings
    with _lock:
        if _broker is None:
            settings = Settings.from_env()
            logs.configure(settings.log_level, settings.log_format)
            broker = build_broker(settings)
            if metrics.prepare_worker(settings):
                # Imported after prepare_worker, by design: it reads the multiprocess directory.
                from dramatiq.middleware.prometheus import Prometheus  # noqa: PLC0415

                broker.add_middleware(Prometheus())
            broker.add_middleware(Boot())
            declare(broker, settings)
            dramatiq.set_broker(broker)
            _broker, _settings = broker, settings
        return _broker


def _retry_when(retries: int, exception: BaseException) -> bool:
    # The pipeline's own reschedules are bounded by its retry budget; a bug is retried a few
    # times and then the job is failed by job_exhausted, never left hanging.
    return isinstance(exception, dramatiq.Retry) or retries < UNEXPECTED_ERROR_RETRIES


def run_job(job_id: str, account: str = "") -> None:
    """Run one signature job (of ``account``, when the sender knew it)."""
    structlog.contextvars.bind_contextvars(job_id=job_id)
    try:
        runtime().pipeline.run(job_id, account or None)
    except RetryLater as exc:
        raise dramatiq.Retry(str(exc), delay=exc.delay_ms) from None
    except _REDIS_DOWN as exc:
        # Not a failure of the job: it is in the outbox or holds a lease, and runs again.
        log.warning("redis_unavailable", actor="run_job", error=str(exc))
        raise dramatiq.Retry("redis unavailable", delay=REDIS_DOWN_RETRY_MS) from None
    finally:
        structlog.contextvars.clear_contextvars()


def job_exhausted(message: dict[str, Any], retry_info: dict[str, Any]) -> None:
    """A job whose actor kept failing unexpectedly is failed, and its gate handed on."""
    job_id = str(message["args"][0])
    runtime().pipeline.give_up(
        job_id, f"internal error after {retry_info.get('retries')} attempts; see the worker logs"
    )


def poll(members: list[str]) -> None:
    """Poll a chunk of due signatures (claimed for a while: a lost chunk comes due again)."""
    try:
        runtime().tracker.poll(members)
    except _REDIS_DOWN as exc:
        log.warning("redis_unavailable", actor="poll", error=str(exc), signatures=len(members))


def reap(full: bool) -> None:
    """One reaper pass; lets the scheduler send the next one."""
    rt = runtime()
    try:
        rt.reaper.tick(full=full)
        rt.store.redis.delete(rt.store.keys.reaping())
    except _REDIS_DOWN as exc:
        # The marker expires by itself; the next pass repairs what this one did not.
        log.warning("redis_unavailable", actor="reap", error=str(exc))


def cleanup() -> None:
    """The periodic cleanup, with the policy of the settings."""
    from worker.cleanup import Cleanup, Policy  # noqa: PLC0415

    rt = runtime()
    try:
        Cleanup(rt).run(Policy.from_settings(rt.settings), dry_run=False)
    except _REDIS_DOWN as exc:
        log.warning("redis_unavailable", actor="cleanup", error=str(exc))


def webhook(delivery_id: str) -> None:
    """One attempt of a webhook delivery (its state in Redis owns it: a lost message comes
    due again after the claim's hold)."""
    try:
        runtime().deliveries.deliver(delivery_id)
    except _REDIS_DOWN as exc:
        log.warning("redis_unavailable", actor="webhook", error=str(exc))


def declare(target: Broker, settings: Settings) -> dict[str, Actor[Any, Any]]:
    """Declare signq's actors on a broker (``setup()``'s; tests and embedders their own)."""
    queue, track = settings.queue, track_queue(settings)
    return {
        RUN_JOB: dramatiq.actor(
            broker=target,
            actor_name=RUN_JOB,
            queue_name=queue,
            retry_when=_retry_when,
            min_backoff=1000,
            max_backoff=60_000,
            on_retry_exhausted=JOB_EXHAUSTED,
        )(run_job),
        JOB_EXHAUSTED: dramatiq.actor(
            broker=target,
            actor_name=JOB_EXHAUSTED,
            queue_name=queue,
            max_retries=3,
        )(job_exhausted),
        POLL: dramatiq.actor(broker=target, actor_name=POLL, queue_name=track, max_retries=0)(poll),
        REAP: dramatiq.actor(broker=target, actor_name=REAP, queue_name=track, max_retries=0)(reap),
        CLEANUP: dramatiq.actor(broker=target, actor_name=CLEANUP, queue_name=track, max_retries=0)(
            cleanup
        ),
        WEBHOOK: dramatiq.actor(
            broker=target,
            actor_name=WEBHOOK,
            queue_name=webhook_queue(settings),
            max_retries=0,
            # Above the delivery's own timeout: a hung receiver is cut by httpx, not by this.
            time_limit=int((settings.webhook_timeout * 3 + 30) * 1000),
        )(webhook),
    }
