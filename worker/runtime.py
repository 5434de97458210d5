"""One process's wiring: settings, Redis, broker, client and the services built on them."""

from __future__ import annotations

from dataclasses import dataclass

from dramatiq import Broker
from redis import Redis

from worker.accounts import Accounts, SecretBox
from worker.broker import BrokerDispatcher, build_broker
from worker.dispatch import Dispatcher
from worker.jobs import Jobs
from worker.jsms.client import JsmsClient
from worker.metrics import metrics
from worker.pipeline import Pipeline
from worker.reaper import Reaper
from worker.scheduler import Scheduler
from worker.settings import Settings
from worker.store import Store
from worker.tracker import Tracker
from worker.webhooks import Deliveries, Endpoints


@dataclass
class Runtime:
    """Everything a command, an actor or a test needs, built once per process."""

    settings: Settings
    store: Store
    broker: Broker
    accounts: Accounts
    jobs: Jobs
    client: JsmsClient
    pipeline: Pipeline
    reaper: Reaper
    tracker: Tracker
    dispatch: Dispatcher
    endpoints: Endpoints
    deliveries: Deliveries

    @classmethod
    def build(
        cls,
        settings: Settings,
        *,
        broker: Broker | None = None,
        client: JsmsClient | None = None,
        redis_client: Redis | None = None,
        dispatch: Dispatcher | None = None,
    ) -> Runtime:
        """Connect to Redis and wire the services (the client's pool opens lazily)."""
        store = Store(settings, redis_client)
        store.on_published = metrics().count_events
        broker = broker or build_broker(settings)
        dispatch = dispatch or BrokerDispatcher(broker, store)
        box = SecretBox(settings.secret_key)
        accounts = Accounts(store, box)
        endpoints = Endpoints(store, box)
        jobs = Jobs(store, accounts, dispatch)
        client = client or JsmsClient.from_settings(settings)
        if client.observer is None:
            client.observer = metrics().observe_api
        pipeline = Pipeline(store, accounts, jobs, client, dispatch)
        tracker = Tracker(store, accounts, jobs, client, dispatch)
        pipeline.on_unconfirmed = tracker.settle_unconfirmed
        reaper = Reaper(store, dispatch)
        reaper.settle_kept = tracker.settle_kept
        return cls(
            settings=settings,
            store=store,
            broker=broker,
            accounts=accounts,
            jobs=jobs,
            client=client,
            pipeline=pipeline,
            reaper=reaper,
            tracker=tracker,
            dispatch=dispatch,
            endpoints=endpoints,
            deliveries=Deliveries(store, endpoints, dispatch),
        )

    def scheduler(self, node: str | None = None) -> Scheduler:
        """A scheduler that sends its work through this runtime's dispatcher."""
        return Scheduler(self.store, self.tracker, self.dispatch, node, pump=self.deliveries.pump)

    def close(self) -> None:
        """Close connections."""
        self.client.close()
        self.deliveries.close()
        self.store.close()
