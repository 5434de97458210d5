"""Dramatiq actors: thin, taking ids, calling the pipeline. ``dramatiq worker.actors`` works.

Importing this module builds the broker from the environment and makes it Dramatiq's global
broker, as Dramatiq's own CLI expects.
"""

from __future__ import annotations

from typing import Any

import dramatiq
import structlog
from dramatiq import Actor, Broker

from worker import logs, metrics
from worker.broker import CLEANUP, JOB_EXHAUSTED, POLL, REAP, RUN_JOB, build_broker, track_queue
from worker.pipeline import RetryLater
from worker.runtime import Runtime
from worker.settings import Settings

UNEXPECTED_ERROR_RETRIES = 5
SETTINGS = Settings.from_env()
logs.configure(SETTINGS.log_level, SETTINGS.log_format)
broker = build_broker(SETTINGS)
if metrics.prepare_worker(SETTINGS):
    from dramatiq.middleware.prometheus import Prometheus  # after prepare_worker, by design

    broker.add_middleware(Prometheus())
dramatiq.set_broker(broker)
_runtime: Runtime | None = None


def runtime() -> Runtime:
    """This process's runtime, built on first use (after any fork)."""
    global _runtime  # noqa: PLW0603 - one runtime per worker process
    if _runtime is None:
        _runtime = Runtime.build(SETTINGS, broker=broker)
    return _runtime


def set_runtime(value: Runtime | None) -> None:
    """Use this runtime in this process (tests point it at the emulator)."""
    global _runtime  # noqa: PLW0603 - one runtime per worker process
    _runtime = value


def _retry_when(retries: int, exception: BaseException) -> bool:
    # The pipeline's own reschedules are bounded by its retry budget; a bug is retried a few
    # times and then the job is failed by job_exhausted, never left hanging.
    return isinstance(exception, dramatiq.Retry) or retries < UNEXPECTED_ERROR_RETRIES


def run_job(job_id: str) -> None:
    """Run one signature job."""
    structlog.contextvars.bind_contextvars(job_id=job_id)
    try:
        runtime().pipeline.run(job_id)
    except RetryLater as exc:
        raise dramatiq.Retry(str(exc), delay=exc.delay_ms) from None
    finally:
        structlog.contextvars.clear_contextvars()


def job_exhausted(message: dict[str, Any], retry_info: dict[str, Any]) -> None:
    """A job whose actor kept failing unexpectedly is failed, and its gate handed on."""
    job_id = str(message["args"][0])
    runtime().pipeline.give_up(
        job_id, f"internal error after {retry_info.get('retries')} attempts; see the worker logs"
    )


def poll(members: list[str]) -> None:
    """Poll a chunk of due signatures."""
    runtime().tracker.poll(members)


def reap(full: bool) -> None:
    """One reaper pass; lets the scheduler send the next one."""
    rt = runtime()
    try:
        rt.reaper.tick(full=full)
    finally:
        rt.store.redis.delete(rt.store.keys.reaping())


def cleanup() -> None:
    """The periodic cleanup, with the policy of the settings."""
    from worker.cleanup import Cleanup, Policy  # noqa: PLC0415

    rt = runtime()
    Cleanup(rt).run(Policy.from_settings(rt.settings), dry_run=False)


def declare(target: Broker, settings: Settings) -> dict[str, Actor[Any, Any]]:
    """Declare signq's actors on a broker (the global one below; tests declare their own)."""
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
    }


ACTORS = declare(broker, SETTINGS)
