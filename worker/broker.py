"""The Dramatiq broker, built from Settings in one place, and the dispatcher that sends on it."""

from __future__ import annotations

from collections.abc import Sequence

from dramatiq import Broker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.message import Message
from redis import Redis

from worker import tracing
from worker.connections import redis_client
from worker.errors import SettingsError
from worker.keys import Keys
from worker.middleware import LogContext
from worker.settings import Settings
from worker.store import Store

RUN_JOB = "signq.run_job"
JOB_EXHAUSTED = "signq.job_exhausted"
POLL = "signq.poll"
REAP = "signq.reap"
CLEANUP = "signq.cleanup"
WEBHOOK = "signq.webhook"


def track_queue(settings: Settings) -> str:
    """The queue of polls, reaper and cleanup: never stuck behind a backlog of submissions."""
    return f"{settings.queue}.track"


def webhook_queue(settings: Settings) -> str:
    """The queue of webhook deliveries."""
    return f"{settings.queue}.webhooks"


def queues(settings: Settings) -> tuple[str, ...]:
    """Every queue signq's actors consume."""
    return (settings.queue, track_queue(settings), webhook_queue(settings))


def build_broker(settings: Settings, client: Redis | None = None) -> Broker:
    """The job broker of SIGNQ_BROKER_URL: Dramatiq's RabbitmqBroker for an amqp:// URL
    (durable queues, publisher confirms), else a RedisBroker under the signq prefix (the state
    Redis unless the URL names another), tuned to recover a dead worker's messages fast.

    A Redis worker that stops sending heartbeats for ``SIGNQ_HEARTBEAT_TIMEOUT`` seconds is dead;
    the maintenance that requeues its unacknowledged messages runs on
    ``SIGNQ_MAINTENANCE_CHANCE`` per million broker commands (10 % by default, where Dramatiq's
    default is 0.1 %), so its messages come back seconds after the timeout. RabbitMQ gives a
    dead consumer's unacknowledged messages back by itself when its connection drops.
    """
    broker: Broker
    if settings.rabbitmq:
        try:
            from dramatiq.brokers.rabbitmq import RabbitmqBroker  # noqa: PLC0415 - needs pika
        except ImportError:
            raise SettingsError(
                "SIGNQ_BROKER_URL is an amqp:// URL but pika is not installed: "
                "pip install 'signq[rabbitmq]'"
            ) from None
        broker = RabbitmqBroker(url=settings.broker_url, confirm_delivery=True)
    else:
        if client is None and not settings.broker_url and settings.redis_sentinels:
            client = redis_client(settings, decode=False)  # the primary, through the sentinels
        broker = RedisBroker(  # type: ignore[no-untyped-call]  # dramatiq is untyped here
            url=None if client is not None else (settings.broker_url or settings.redis_url),
            client=client,
            namespace=Keys(settings.prefix).dramatiq_namespace(),
            heartbeat_timeout=int(settings.heartbeat_timeout * 1000),
            maintenance_chance=settings.maintenance_chance,
        )
    broker.add_middleware(LogContext())
    if tracing.configure(settings.otel_exporter):
        broker.add_middleware(tracing.Propagation())
    broker.declare_queue(settings.queue)
    broker.declare_queue(track_queue(settings))
    broker.declare_queue(webhook_queue(settings))
    return broker


class BrokerDispatcher:
    """The Dramatiq broker as signq's dispatcher: a job's message is sent, then the job's
    outbox entry moves to its redelivery deadline; polls, the reaper and the cleanup travel on
    the tracking queue."""

    def __init__(self, broker: Broker, store: Store) -> None:
        self.broker = broker
        self.store = store
        self.queue = store.settings.queue

    def jobs(self, job_ids: Sequence[str]) -> None:
        """Send one message per job id. The outbox keeps each job until its run starts, so a
        message lost with a worker's memory is sent again (``SIGNQ_REDELIVER_SECONDS``)."""
        if not job_ids:
            return
        for job_id in job_ids:
            # The job's account, when this process knows it, saves the run's first script a
            # second run to learn which keys it may touch.
            account = self.store.account_of(job_id)
            args = (job_id, account) if account else (job_id,)
            self.send(RUN_JOB, *args, queue=self.queue)
        self.store.sent(int(self.store.settings.redeliver_seconds * 1000), job_ids)

    def poll(self, members: list[str]) -> None:
        """A chunk of due signatures for a worker to poll."""
        self.send(POLL, members)

    def reap(self, full: bool) -> None:
        """One reaper pass for a worker to run."""
        self.send(REAP, full)

    def cleanup(self) -> None:
        """The periodic cleanup for a worker to run."""
        self.send(CLEANUP)

    def webhooks(self, delivery_ids: Sequence[str]) -> None:
        """One message per webhook delivery, on the webhooks queue (a slow receiver never
        holds up the jobs or the polls)."""
        for delivery_id in delivery_ids:
            self.send(WEBHOOK, delivery_id, queue=webhook_queue(self.store.settings))

    def send(self, actor: str, *args: object, queue: str | None = None) -> None:
        """Send one message to an actor by name (the tracking queue unless told otherwise)."""
        self.broker.enqueue(
            Message(
                queue_name=queue or track_queue(self.store.settings),
                actor_name=actor,
                args=args,
                kwargs={},
                options={},
            )
        )
