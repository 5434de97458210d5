"""Settings come from the environment, in one place, with errors that name the variable."""

from __future__ import annotations

import pytest

from worker.errors import SettingsError
from worker.settings import (
    DEFAULT_API_URL,
    DEFAULT_REDIS_URL,
    PollPolicy,
    RateLimits,
    Retention,
    Settings,
)


def test_defaults() -> None:
    """An empty environment gives the documented defaults."""
    settings = Settings.from_env({})
    assert (settings.redis_url, settings.api_url, settings.prefix) == (
        DEFAULT_REDIS_URL,
        DEFAULT_API_URL,
        "signq",
    )


def test_redis_url_falls_back_to_redis_url_and_signq_wins() -> None:
    """REDIS_URL is used when SIGNQ_REDIS_URL is not set; SIGNQ_REDIS_URL wins when both are."""
    assert Settings.from_env({"REDIS_URL": "redis://a:1/0"}).redis_url == "redis://a:1/0"
    both = {"REDIS_URL": "redis://a:1/0", "SIGNQ_REDIS_URL": "redis://b:2/1"}
    assert Settings.from_env(both).redis_url == "redis://b:2/1"


def test_typed_values_are_parsed() -> None:
    """Numbers are read as numbers."""
    settings = Settings.from_env({"SIGNQ_READ_TIMEOUT": "2.5", "SIGNQ_CLIENT_MAX_ATTEMPTS": "7"})
    assert (settings.read_timeout, settings.client_max_attempts) == (2.5, 7)


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SIGNQ_READ_TIMEOUT": "soon"}, "SIGNQ_READ_TIMEOUT='soon' is not a valid float"),
        ({"SIGNQ_CLIENT_MAX_ATTEMPTS": "0"}, "SIGNQ_CLIENT_MAX_ATTEMPTS must be greater than 0"),
        ({"SIGNQ_API_URL": "ftp://x"}, "SIGNQ_API_URL must be an http(s) URL"),
        ({"SIGNQ_PREFIX": "a b"}, "SIGNQ_PREFIX must be a non-empty word"),
        ({"SIGNQ_LOG_FORMAT": "xml"}, "SIGNQ_LOG_FORMAT must be one of"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], says: str) -> None:
    """A value that cannot be used is refused with the variable's name."""
    with pytest.raises(SettingsError) as caught:
        Settings.from_env(env)
    assert says in str(caught.value)


def test_settings_are_frozen_and_overridable() -> None:
    """Settings cannot be mutated; with_overrides makes a checked copy."""
    settings = Settings.from_env({})
    with pytest.raises(AttributeError):
        settings.prefix = "x"  # type: ignore[misc]
    assert settings.with_overrides(prefix="other").prefix == "other"
    with pytest.raises(SettingsError):
        settings.with_overrides(read_timeout=-1)


def test_grouped_settings_are_values_built_from_the_same_variables() -> None:
    """RateLimits, PollPolicy and Retention group the variables the core reads together, in
    the units it uses (ms), with nothing new to configure."""
    settings = Settings.from_env(
        {
            "SIGNQ_POLL_INITIAL_SECONDS": "2.5",
            "SIGNQ_POLL_MAX_SECONDS": "60",
            "SIGNQ_POLL_RESOLVED_SECONDS": "3600",
            "SIGNQ_JOB_RETENTION_DAYS": "0.5",
            "SIGNQ_IMAGE_TTL_DAYS": "2",
            "SIGNQ_RATE_LIMIT": "20",
            "SIGNQ_ACCOUNT_RATE_BURST": "3",
        }
    )
    assert settings.poll_policy == PollPolicy(first_ms=2500, max_ms=60_000, resolved_ms=3_600_000)
    assert settings.retention == Retention(job_ms=43_200_000, image_ms=172_800_000)
    assert settings.rate_limits == RateLimits(
        rate=20.0, burst=10, account_rate=0.0, account_burst=3
    )
    assert Settings().poll_policy == PollPolicy()
    assert Settings().retention == Retention()


def test_a_short_dashboard_token_is_refused_by_name() -> None:
    """A guessable dashboard token stops the command, naming the variable."""
    with pytest.raises(SettingsError, match="SIGNQ_DASHBOARD_TOKEN must be at least 16"):
        Settings.from_env({"SIGNQ_DASHBOARD_TOKEN": "short"})
    assert Settings.from_env({"SIGNQ_DASHBOARD_TOKEN": "x" * 16}).dashboard_token == "x" * 16


def test_the_broker_url_is_checked_and_names_rabbitmq() -> None:
    """SIGNQ_BROKER_URL: unset, redis:// or amqp://; anything else is refused by name with the
    password masked."""
    assert not Settings.from_env({}).rabbitmq
    assert Settings.from_env({"SIGNQ_BROKER_URL": "amqp://u:p@h:5672/%2F"}).rabbitmq
    assert not Settings.from_env({"SIGNQ_BROKER_URL": "redis://h:6379/1"}).rabbitmq
    with pytest.raises(SettingsError, match="SIGNQ_BROKER_URL must be") as caught:
        Settings.from_env({"SIGNQ_BROKER_URL": "kafka://u:hunter2@h:9092"})
    assert "hunter2" not in str(caught.value)


def test_sentinels_are_checked_and_build_a_sentinel_client() -> None:
    """SIGNQ_REDIS_SENTINELS: host:port pairs, refused by name otherwise; with them the state
    client is redis-py's Sentinel-managed client of the named primary, with the URL's
    password and database."""
    from redis.sentinel import SentinelConnectionPool  # noqa: PLC0415

    from worker.connections import redis_client  # noqa: PLC0415

    with pytest.raises(SettingsError, match="SIGNQ_REDIS_SENTINELS must be host:port"):
        Settings.from_env({"SIGNQ_REDIS_SENTINELS": "10.0.0.5:26379,nonsense"})
    settings = Settings.from_env(
        {
            "SIGNQ_REDIS_SENTINELS": "127.0.0.1:26379,127.0.0.1:26380",
            "SIGNQ_REDIS_MASTER": "signq",
            "SIGNQ_REDIS_URL": "redis://:pw@ignored:6379/3",
        }
    )
    assert settings.redis_explicit
    client = redis_client(settings)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "signq"
    assert pool.connection_kwargs["db"] == 3
    assert pool.connection_kwargs["password"] == "pw"
    client.close()
