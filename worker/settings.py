"""Settings, built once from the environment: the only module that reads ``os.environ``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

DEFAULT_API_URL = "https://api.sms.jpush.cn/v1"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


class SettingsError(ValueError):
    """An environment variable holds a value signq cannot use; the message names it."""


@dataclass(frozen=True)
class Settings:
    """Everything signq can be configured with; see the README's configuration table."""

    redis_url: str = DEFAULT_REDIS_URL
    api_url: str = DEFAULT_API_URL
    prefix: str = "signq"
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Read ``SIGNQ_*`` variables (``REDIS_URL`` as a fallback); unset ones keep defaults."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        redis_url = env.get("SIGNQ_REDIS_URL") or env.get("REDIS_URL")
        if redis_url:
            values["redis_url"] = redis_url
        for field in fields(cls):
            if field.name == "redis_url":
                continue
            name = f"SIGNQ_{field.name.upper()}"
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[field.name] = _parse(name, raw, field.type)
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
        )
        for name in positive:
            if getattr(self, name) <= 0:
                raise SettingsError(f"SIGNQ_{name.upper()} must be greater than 0")
        if self.client_max_retry_seconds < 0:
            raise SettingsError("SIGNQ_CLIENT_MAX_RETRY_SECONDS must not be negative")
        if not self.api_url.startswith(("http://", "https://")):
            raise SettingsError(f"SIGNQ_API_URL must be an http(s) URL, got {self.api_url!r}")
        if not self.prefix or any(c.isspace() for c in self.prefix):
            raise SettingsError("SIGNQ_PREFIX must be a non-empty word without spaces")
        if self.log_format not in ("auto", "json", "console"):
            raise SettingsError("SIGNQ_LOG_FORMAT must be one of auto, json, console")

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields changed (tests, the demo, command-line flags)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update(changes)
        settings = type(self)(**values)
        settings.check()
        return settings


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
