"""An isolated signq system for one test: its own key prefix, broker, runtime and workers."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from tests.conftest import FAST_RETRY, new_credentials
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.jsms import Credentials, JsmsClient, Timeouts
from worker.runtime import Runtime
from worker.settings import Settings
from worker.testing import FakeClock, InlineDispatcher, RecordingDispatcher, in_process

FAST = {
    "lease_seconds": 2.0,
    "outbox_grace_seconds": 0.5,
    "retry_backoff_min": 0.05,
    "retry_backoff_max": 0.2,
    "poll_initial_seconds": 0.2,
    "probe_backoff_initial": 0.2,
    "probe_backoff_max": 1.0,
    "heartbeat_timeout": 3.0,
    "tick_seconds": 0.1,
    "leader_ttl_seconds": 1.0,
}


@dataclass
class System:
    """A runtime on its own prefix, wired to the session's emulator."""

    runtime: Runtime
    admin: EmulatorAdmin
    sent: list[str] = field(default_factory=list)
    clock: FakeClock = field(default_factory=FakeClock)

    @property
    def settings(self) -> Settings:
        """This system's settings."""
        return self.runtime.settings

    def tenant(self, name: str | None = None, *, audit_delay: float = 3600, **options: Any) -> str:
        """A new account registered both at the emulator and in signq; returns its name."""
        creds = new_credentials()
        self.admin.add_account(
            creds.app_key, creds.master_secret, audit_delay=audit_delay, **options
        )
        name = name or "t" + uuid.uuid4().hex[:10]
        self.runtime.accounts.add(name, creds.app_key, creds.master_secret)
        return name

    def elapse_outbox_grace(self) -> int:
        """Make every job in the outbox due now, as if its grace had passed on Redis's clock
        (which a test cannot move): the reaper's next pass sends them. Returns how many."""
        redis, outbox = self.runtime.store.redis, self.runtime.store.keys.outbox()
        ids = redis.zrange(outbox, 0, -1)
        if ids:
            redis.zadd(outbox, dict.fromkeys(ids, 0), xx=True)
        return len(ids)

    def credentials(self, account: str) -> Credentials:
        """The account's credentials as signq stores them."""
        data = self.runtime.store.redis.hgetall(self.runtime.store.keys.account(account))
        return self.runtime.accounts.credentials(account, data["app_key"], data["secret"])

    def app_key(self, account: str) -> str:
        """The account's app key at the emulator."""
        return str(
            self.runtime.store.redis.hget(self.runtime.store.keys.account(account), "app_key")
        )

    def state(self, job_id: str) -> str:
        """A job's state."""
        return str(self.runtime.store.redis.hget(self.runtime.store.keys.job(job_id), "state"))

    def events(self, account: str | None = None) -> list[dict[str, Any]]:
        """Every event published so far, oldest first, optionally for one account."""
        import json  # noqa: PLC0415

        entries = self.runtime.store.redis.xrange(self.runtime.store.keys.events())
        found = [json.loads(fields["event"]) for _, fields in entries]
        return [e for e in found if account is None or e["account"] == account]

    def drain(self, limit: int = 200) -> list[str]:
        """Run every job sent so far, and those their runs send, in order; returns outcomes."""
        outcomes = []
        for _ in range(limit):
            if not self.sent:
                return outcomes
            outcomes.append(self.runtime.pipeline.run(self.sent.pop(0)))
        raise AssertionError(f"still {len(self.sent)} job(s) to run after {limit}")


def build_system(emulator_server: EmulatorServer, admin: EmulatorAdmin, **overrides: Any) -> System:
    """A system whose dispatcher records job ids instead of sending messages (drive it with
    drain), and whose pipeline waits on a FakeClock."""
    settings = isolated_settings(emulator_server, **overrides)
    system_clock = FakeClock()
    client = JsmsClient.from_settings(
        settings, retry=FAST_RETRY, timeouts=Timeouts(connect=2.0, read=2.0), sleep=lambda _s: None
    )
    dispatcher = RecordingDispatcher()
    runtime = Runtime.build(settings, client=client, dispatch=dispatcher)
    dispatcher.store = runtime.store
    runtime.pipeline.to.clock = system_clock
    return System(runtime, admin, sent=dispatcher.sent, clock=system_clock)


def isolated_settings(emulator_server: EmulatorServer, **overrides: Any) -> Settings:
    """Settings on a fresh prefix, pointed at the emulator, with short waits."""
    prefix = f"{Settings.from_env().prefix}-{uuid.uuid4().hex[:6]}"
    return Settings.from_env().with_overrides(
        prefix=prefix, api_url=emulator_server.api_url, **{**FAST, **overrides}
    )


@contextmanager
def dramatiq_system(
    emulator_server: EmulatorServer, admin: EmulatorAdmin, *, threads: int = 8, **overrides: Any
) -> Iterator[System]:
    """A system with a real broker on Redis and an in-process Dramatiq worker pool."""
    settings = isolated_settings(emulator_server, **overrides)
    client = JsmsClient.from_settings(
        settings, retry=FAST_RETRY, timeouts=Timeouts(connect=2.0, read=2.0)
    )
    with in_process(settings, threads=threads, client=client) as running:
        yield System(running.runtime, admin)


def resolve(runtime: Runtime, job_id: str, status: Any, reason: str | None = None) -> bool:
    """Report a job's audit result as a callback does (the tracker's compare-and-set path);
    True when it changed something."""
    record = runtime.jobs.require(job_id)
    what = runtime.tracker.observe_result(
        record.account, record.sign_id or 0, int(status), reason=reason
    )
    return what == "changed"


class Resolver:
    """Polls every pending audit through the tracker, as the scheduler's ticks would."""

    def __init__(self, system: System) -> None:
        self.system = system
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Resolver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        rt = self.system.runtime
        while not self._stop.wait(0.02):
            for record in rt.jobs.find(state="pending_audit", limit=1000):
                rt.tracker.poll_one(f"{record.account}:{record.sign_id}")


def inline_scheduler(system: System, node: str | None = None) -> Any:
    """A scheduler whose work runs inline in the test: polls and the reaper."""
    from worker.scheduler import Scheduler  # noqa: PLC0415

    rt = system.runtime

    def reap(full: bool) -> None:
        rt.reaper.tick(full=full)
        rt.store.redis.delete(rt.store.keys.reaping())

    dispatcher = InlineDispatcher(rt.store, run_poll=rt.tracker.poll, run_reap=reap)
    return Scheduler(rt.store, rt.tracker, dispatcher, node)


def register_tenants(runtime: Runtime, admin: EmulatorAdmin, count: int, prefix: str) -> list[str]:
    """``count`` accounts, each at the emulator (slow audits) and in signq; their names."""
    names = []
    for n in range(count):
        creds = new_credentials()
        admin.add_account(creds.app_key, creds.master_secret, audit_delay=3600)
        name = f"{prefix}{n}-{creds.app_key[:6]}"
        runtime.accounts.add(name, creds.app_key, creds.master_secret)
        names.append(name)
    return names
