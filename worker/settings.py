"""Settings, built once from the environment: the only module that reads ``os.environ``."""

from __future__ import annotations

import base64
import binascii
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from worker.errors import SettingsError

DEFAULT_API_URL = "https://api.sms.jpush.cn/v1"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


@dataclass(frozen=True)
class RateLimits:
    """Token buckets toward the API: requests per second and burst, over all accounts and per
    account (a rate of 0 is no limit)."""

    rate: float = 0.0
    burst: int = 10
    account_rate: float = 0.0
    account_burst: int = 2


@dataclass(frozen=True)
class PollPolicy:
    """When a tracked signature is polled, in ms: a new audit after ``first_ms``, doubling with
    jitter up to ``max_ms`` while pending; a resolved one every ``resolved_ms``."""

    first_ms: int = 5_000
    max_ms: int = 300_000
    resolved_ms: int = 21_600_000


@dataclass(frozen=True)
class Retention:
    """How long things are kept, in ms: a finished job's record (and its events' index), and
    an audit image from its upload."""

    job_ms: int = 30 * 86_400_000
    image_ms: int = 60 * 86_400_000


@dataclass(frozen=True)
class Settings:
    """Everything signq can be configured with; see the README's configuration table."""

    redis_url: str = DEFAULT_REDIS_URL
    # True when the environment named a Redis (the demo then uses it, not an embedded one).
    redis_explicit: bool = False
    api_url: str = DEFAULT_API_URL
    prefix: str = "signq"
    # The job broker: unset (the state Redis), a redis:// URL, or amqp(s):// for RabbitMQ.
    broker_url: str = ""
    # Redis behind Sentinel: host:port,... of the sentinels and the primary's name; password
    # and database still come from SIGNQ_REDIS_URL.
    redis_sentinels: str = ""
    redis_master: str = "mymaster"
    # The JSMS client.
    connect_timeout: float = 5.0
    read_timeout: float = 30.0
    ca_bundle: str | None = None
    max_image_bytes: int = 2 * 1024 * 1024
    client_max_attempts: int = 4
    client_max_retry_seconds: float = 30.0
    client_backoff_initial: float = 0.5
    client_backoff_max: float = 8.0
    # Logging.
    log_level: str = "INFO"
    log_format: str = "auto"
    # Accounts: a Fernet key encrypts master secrets at rest when set.
    secret_key: str | None = field(default=None, repr=False)
    # The broker and workers.
    queue: str = "signq"
    heartbeat_timeout: float = 15.0
    maintenance_chance: int = 100_000
    lease_seconds: float = 30.0
    # How long an idle worker waits between fetches at most: the pickup delay of a message
    # sent to an idle pool, such as the next job of an account whose audit just resolved.
    worker_timeout_ms: int = 100
    # Jobs.
    job_retention_days: float = 30.0
    image_ttl_days: float = 60.0
    max_parked_per_account: int = 0
    retry_budget_seconds: float = 3600.0
    retry_backoff_min: float = 5.0
    retry_backoff_max: float = 300.0
    uncertain_retry_window: float = 300.0
    probe_backoff_initial: float = 30.0
    probe_backoff_max: float = 900.0
    outbox_grace_seconds: float = 30.0
    # A queued job whose run has not started this long after its message was sent gets another
    # (a worker's reconnect can drop the messages it held in memory).
    redeliver_seconds: float = 600.0
    # Rate limits toward the API, in requests per second (0: unlimited).
    rate_limit: float = 0.0
    rate_burst: int = 10
    account_rate_limit: float = 0.0
    account_rate_burst: int = 2
    # Tracking: the first poll of a new audit, doubling with jitter up to the cap.
    poll_initial_seconds: float = 5.0
    poll_max_seconds: float = 300.0
    poll_resolved_seconds: float = 21_600.0
    # The scheduler: one leader ticks; each tick claims at most poll_batch due signatures and
    # sends them in poll messages of poll_chunk; a full reaper pass every reap_full_every ticks.
    tick_seconds: float = 1.0
    leader_ttl_seconds: float = 5.0
    poll_batch: int = 1000
    poll_chunk: int = 10
    reap_full_every: int = 60
    # Cleanup of unused signatures (the periodic run is off while the interval is 0).
    cleanup_interval_hours: float = 0.0
    cleanup_older_than_days: float = 30.0
    cleanup_statuses: str = "approved,rejected"
    # Audit callbacks: how far a push's timestamp may be from now.
    callback_max_age_seconds: float = 300.0
    # Metrics (0: no endpoint).
    metrics_port: int = 0
    metrics_host: str = "0.0.0.0"  # noqa: S104 - scraped from outside a container
    # Events.
    events_maxlen: int = 1_000_000
    # Webhooks: the wait before each attempt of a delivery, in seconds (Svix's schedule: at
    # once, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h); after the last, the delivery is dead.
    webhook_retry_schedule: str = "0,5,300,1800,7200,18000,36000,36000"
    # An endpoint failing without a success for this long is disabled.
    webhook_disable_after_hours: float = 120.0
    webhook_timeout: float = 10.0
    # Loopback, private and link-local targets are refused unless this is set (SSRF).
    webhooks_allow_private: bool = False
    # OpenTelemetry's own OTEL_TRACES_EXPORTER (otlp, console; "otlp" when only an OTLP
    # endpoint is set): tracing is on when it is, and the otel extra is installed.
    otel_exporter: str = ""
    # The dashboard's token (a random one is made and printed at start when unset).
    dashboard_token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``SIGNQ_*`` variables (``REDIS_URL`` as a fallback); unset ones keep defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        redis_url = env.get("SIGNQ_REDIS_URL") or env.get("REDIS_URL")
        if redis_url:
            values["redis_url"] = redis_url
            values["redis_explicit"] = True
        if env.get("SIGNQ_REDIS_SENTINELS"):
            values["redis_explicit"] = True  # a Redis is named: the demo uses it
        exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
        if not exporter and (
            env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        ):
            exporter = "otlp"
        values["otel_exporter"] = exporter
        for spec in fields(cls):
            if spec.name in ("redis_url", "redis_explicit", "otel_exporter"):
                continue
            name = f"SIGNQ_{spec.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[spec.name] = _parse(name, raw, spec.type)
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Reject values that parse but make no sense, naming the variable."""
        positive = (
            "connect_timeout",
            "read_timeout",
            "max_image_bytes",
            "client_max_attempts",
            "client_backoff_initial",
            "client_backoff_max",
            "heartbeat_timeout",
            "lease_seconds",
            "worker_timeout_ms",
            "job_retention_days",
            "image_ttl_days",
            "retry_backoff_min",
            "retry_backoff_max",
            "probe_backoff_initial",
            "probe_backoff_max",
            "outbox_grace_seconds",
            "redeliver_seconds",
            "rate_burst",
            "account_rate_burst",
            "events_maxlen",
            "poll_initial_seconds",
            "poll_max_seconds",
            "poll_resolved_seconds",
            "tick_seconds",
            "leader_ttl_seconds",
            "poll_batch",
            "poll_chunk",
            "reap_full_every",
            "cleanup_older_than_days",
            "callback_max_age_seconds",
            "webhook_disable_after_hours",
            "webhook_timeout",
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"SIGNQ_{name.upper()} must be greater than 0")
        not_negative = (
            "client_max_retry_seconds",
            "max_parked_per_account",
            "retry_budget_seconds",
            "uncertain_retry_window",
            "rate_limit",
            "account_rate_limit",
            "cleanup_interval_hours",
            "metrics_port",
        )
        for name in not_negative:
            if getattr(self, name) < 0:
                raise SettingsError(f"SIGNQ_{name.upper()} must not be negative")
        if not 0 < self.maintenance_chance <= 1_000_000:
            raise SettingsError("SIGNQ_MAINTENANCE_CHANCE must be from 1 to 1000000")
        unknown = set(self.cleanup_statuses.split(",")) - {"approved", "rejected"}
        if unknown:
            raise SettingsError("SIGNQ_CLEANUP_STATUSES may hold only approved and rejected")
        self._check_integrations()
        if self.leader_ttl_seconds <= self.tick_seconds:
            raise SettingsError("SIGNQ_LEADER_TTL_SECONDS must be longer than SIGNQ_TICK_SECONDS")
        if self.secret_key is not None:
            check_fernet_key(self.secret_key, "SIGNQ_SECRET_KEY")
        if not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise SettingsError(
                "SIGNQ_REDIS_URL must be a redis://, rediss:// or unix:// URL, got "
                f"{masked_url(self.redis_url)!r}"
            )
        if not self.api_url.startswith(("http://", "https://")):
            raise SettingsError(f"SIGNQ_API_URL must be an http(s) URL, got {self.api_url!r}")
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise SettingsError("SIGNQ_PREFIX must be a non-empty word without spaces")
        if self.log_format not in ("auto", "json", "console"):
            raise SettingsError("SIGNQ_LOG_FORMAT must be one of auto, json, console")

    @property
    def rate_limits(self) -> RateLimits:
        """The four rate-limit settings as one value."""
        return RateLimits(
            self.rate_limit, self.rate_burst, self.account_rate_limit, self.account_rate_burst
        )

    @property
    def rabbitmq(self) -> bool:
        """Whether the job broker is RabbitMQ."""
        return self.broker_url.startswith(("amqp://", "amqps://"))

    def _check_sentinels(self) -> None:
        for item in (x.strip() for x in self.redis_sentinels.split(",") if self.redis_sentinels):
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise SettingsError(
                    f"SIGNQ_REDIS_SENTINELS must be host:port,host:port,..., got {item!r}"
                )
        if not self.redis_master.strip():
            raise SettingsError("SIGNQ_REDIS_MASTER must name the primary the sentinels watch")

    def _check_integrations(self) -> None:
        self._check_sentinels()
        if self.broker_url and not self.broker_url.startswith(
            ("redis://", "rediss://", "unix://", "amqp://", "amqps://")
        ):
            raise SettingsError(
                "SIGNQ_BROKER_URL must be empty (the state Redis), a redis:// URL or an "
                f"amqp:// URL, got {masked_url(self.broker_url)!r}"
            )
        self.webhook_schedule  # noqa: B018 - parsed here to refuse a bad one at start
        if self.dashboard_token is not None and len(self.dashboard_token) < 16:
            raise SettingsError("SIGNQ_DASHBOARD_TOKEN must be at least 16 characters")
        if self.otel_exporter not in ("", "none", "otlp", "console"):
            raise SettingsError(
                "OTEL_TRACES_EXPORTER must be otlp, console or none for signq, got "
                f"{self.otel_exporter!r}"
            )

    @property
    def webhook_schedule(self) -> tuple[float, ...]:
        """The wait before each attempt of a webhook delivery, in seconds."""
        try:
            waits = tuple(float(x) for x in self.webhook_retry_schedule.split(","))
        except ValueError:
            waits = ()
        if not waits or not all(0 <= w < math.inf for w in waits):
            raise SettingsError(
                "SIGNQ_WEBHOOK_RETRY_SCHEDULE must be comma-separated seconds, each 0 or more "
                f"(like 0,5,300), got {self.webhook_retry_schedule!r}"
            )
        return waits

    @property
    def poll_policy(self) -> PollPolicy:
        """The three polling settings as one value."""
        return PollPolicy(
            _ms(self.poll_initial_seconds),
            _ms(self.poll_max_seconds),
            _ms(self.poll_resolved_seconds),
        )

    @property
    def retention(self) -> Retention:
        """The two retention settings as one value."""
        return Retention(_ms(self.job_retention_days * 86_400), _ms(self.image_ttl_days * 86_400))

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests, the demo, command-line flags)."""
        values = {spec.name: getattr(self, spec.name) for spec in fields(self)}
        values.update(changes)
        settings = type(self)(**values)
        settings.check()
        return settings


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


def masked_url(url: str) -> str:
    """A URL as it may be shown: any password replaced by ``***``."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = f"{parts.username}:" if parts.username else ":"
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}{port}"))


def check_fernet_key(key: str, what: str) -> None:
    """Refuse, naming ``what``, a key that is not a Fernet key."""
    try:
        raw = base64.urlsafe_b64decode(key.encode())
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise SettingsError(
            f"{what} must be a Fernet key: 32 bytes, url-safe base64 (make one with "
            "`python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key()"
            ".decode())'`)"
        )


def _parse(name: str, raw: str, kind: Any) -> Any:
    kind = str(kind)
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind.startswith("bool"):
            lowered = raw.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not a valid {kind.split()[0]}") from None
    return raw
