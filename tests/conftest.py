"""Session-wide real servers: the JSMS emulator over HTTP on loopback, and a real Redis."""

from __future__ import annotations

import gc
import io
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import structlog

from worker import testing
from worker.embedded_redis import EmbeddedRedis, redis_answers
from worker.emulator import AuditRules, Emulator, EmulatorAdmin, EmulatorConfig, EmulatorServer
from worker.jsms import Credentials, JsmsClient, RetryPolicy, Timeouts
from worker.settings import Settings

FAST_RETRY = RetryPolicy(max_attempts=4, max_seconds=5.0, backoff_initial=0.01, backoff_max=0.05)


@pytest.fixture(scope="session")
def emulator() -> Emulator:
    """The emulator's state, shared by the session; tests isolate themselves by account."""
    return Emulator(
        EmulatorConfig(
            rules=AuditRules(audit_delay=0.3, approval_rate=1.0, in_use_rate=0.0),
            callback_time_scale=0.0005,
            tick_seconds=0.01,
        )
    )


@pytest.fixture(scope="session")
def emulator_server(emulator: Emulator) -> Iterator[EmulatorServer]:
    """One emulator served over real HTTP on 127.0.0.1 for the whole session."""
    with EmulatorServer(emulator) as server:
        yield server


@pytest.fixture(scope="session")
def admin(emulator_server: EmulatorServer) -> Iterator[EmulatorAdmin]:
    """Client of the emulator's admin API."""
    client = EmulatorAdmin(emulator_server.url)
    yield client
    client.close()


def new_credentials() -> Credentials:
    """A fresh, unique app key and secret."""
    return Credentials(uuid.uuid4().hex[:24], "secret-" + uuid.uuid4().hex)


@pytest.fixture
def account(admin: EmulatorAdmin) -> Credentials:
    """A fresh emulator account (slow audits, so a test decides when they resolve)."""
    creds = new_credentials()
    admin.add_account(creds.app_key, creds.master_secret, audit_delay=3600)
    return creds


@pytest.fixture
def sleeps() -> list[float]:
    """Every back-off the client asked to sleep, in order (the client does not really sleep)."""
    return []


@pytest.fixture
def client(emulator_server: EmulatorServer, sleeps: list[float]) -> Iterator[JsmsClient]:
    """A JSMS client on the emulator with fast retries and recorded, skipped sleeps."""
    jsms = JsmsClient(
        emulator_server.api_url,
        retry=FAST_RETRY,
        timeouts=Timeouts(connect=2.0, read=2.0),
        sleep=sleeps.append,
    )
    yield jsms
    jsms.close()


_private_redis: list[EmbeddedRedis] = []


def pytest_configure(config: pytest.Config) -> None:
    """Before any test module is imported: a Redis that answers, and a prefix for this run.

    The Redis is SIGNQ_REDIS_URL's (scripts/test makes sure one answers), or a private
    redis-server when pytest runs alone. Every key this run writes is under the prefix.
    """
    url = Settings.from_env().redis_url
    if not redis_answers(url):
        server = EmbeddedRedis().start()
        _private_redis.append(server)
        url = server.url
    os.environ["SIGNQ_REDIS_URL"] = url
    os.environ["SIGNQ_PREFIX"] = f"signqtest-{uuid.uuid4().hex[:8]}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Collect garbage while warnings are still errors: a client some test left unclosed then
    fails every run, instead of whenever the collector happens to run."""
    gc.collect()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Remove this run's keys; stop a private Redis."""
    settings = Settings.from_env()
    if redis_answers(settings.redis_url):
        delete_prefix(settings.redis_url, settings.prefix)
    for server in _private_redis:
        server.stop()


def delete_prefix(url: str, prefix: str) -> None:
    """Delete every key under a prefix (the tests' own, never anything else)."""
    client = redis.Redis.from_url(url)
    try:
        testing.delete_prefix(client, prefix)
    finally:
        client.close()


@pytest.fixture
def system(emulator_server: EmulatorServer, admin: EmulatorAdmin) -> Iterator[Any]:
    """An isolated signq system on its own prefix; its jobs run when the test drains them."""
    from tests.system import build_system  # noqa: PLC0415 - after pytest_configure set the prefix

    sys_ = build_system(emulator_server, admin)
    yield sys_
    sys_.runtime.close()
    delete_prefix(sys_.settings.redis_url, sys_.settings.prefix)


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    """Whatever a test does to logging (`cli.main` configures it onto the stderr of the moment,
    which capsys closes after the test), the next test starts from the same handlers: a handler
    left on a closed stream turned every later log line into a '--- Logging error ---'."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    yield
    if (root.handlers, root.level) != saved:
        root.handlers[:], root.level = saved
        structlog.reset_defaults()


@pytest.fixture
def log_capture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], io.StringIO]]:
    """Route all logging (structlog and the standard library) as JSON into a buffer at a given
    level; logging is restored after the test."""
    from worker import logs  # noqa: PLC0415

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)

    def start(level: str = "INFO") -> io.StringIO:
        buffer = io.StringIO()
        monkeypatch.setattr("sys.stderr", buffer)
        logs.configure(level, "json")
        return buffer

    yield start
    root.handlers[:], root.level = saved
    structlog.reset_defaults()


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis of this test run."""
    return Settings.from_env().redis_url


RABBITMQ_URL = os.environ.get("SIGNQ_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")


def require_rabbitmq() -> None:
    """Return if RabbitMQ answers; otherwise the test is reported as not run (skipped, with the
    reason), or fails where SIGNQ_TEST_REQUIRE_RABBITMQ=1 says it must run (CI sets it)."""
    if testing.rabbitmq_answers(RABBITMQ_URL):
        return
    why = f"RabbitMQ: nothing answers at {RABBITMQ_URL}"
    if os.environ.get("SIGNQ_TEST_REQUIRE_RABBITMQ") == "1":
        pytest.fail(f"{why}, and SIGNQ_TEST_REQUIRE_RABBITMQ=1 requires it")
    pytest.skip(f"{why}; this test did not run")


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    """Settings overrides for each job broker: the state Redis, and RabbitMQ on loopback (its
    queues named for this test alone and deleted afterwards). Where no RabbitMQ answers, the
    RabbitMQ variant is not run, and says so: never counted as passed (in CI it fails)."""
    if request.param == "redis":
        yield {}
        return
    require_rabbitmq()
    queue = f"signq-test-{uuid.uuid4().hex[:8]}"
    yield {"broker_url": RABBITMQ_URL, "queue": queue}
    testing.delete_rabbitmq_queues(Settings(broker_url=RABBITMQ_URL, queue=queue))
