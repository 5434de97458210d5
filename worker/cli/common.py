"""What every command shares: the one CLI error type, the runtime, secrets from stdin."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from worker.errors import LayoutError, SignqError
from worker.runtime import Runtime
from worker.settings import Settings

Handler = Callable[[argparse.Namespace, Settings], int]


class CliError(SignqError):
    """A command that cannot be carried out as given; printed as ``signq: message``, exit 2."""


def runtime(settings: Settings) -> Runtime:
    """The runtime for a command, once the Redis data is known to be in this signq's key
    layout (a Redis not answering yet is left to the command: some wait for it)."""
    from redis.exceptions import ConnectionError as RedisDown  # noqa: PLC0415
    from redis.exceptions import TimeoutError as RedisSlow  # noqa: PLC0415

    rt = Runtime.build(settings)
    try:
        rt.store.check_layout()
    except (RedisDown, RedisSlow):
        pass
    except LayoutError:
        rt.close()
        raise
    return rt


def read_secret(
    path: str | None, *, prompt: str = "master secret: ", flag: str = "--master-secret-file"
) -> str:
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise CliError(f"{flag} {path}: {why}") from None
    if sys.stdin.isatty():
        import getpass  # noqa: PLC0415 - only for an interactive prompt

        return getpass.getpass(prompt).strip()
    return sys.stdin.readline().strip()


def iso(ms: int | None) -> str:
    """A time in ms as people read it (ISO-8601, UTC); JSON output keeps the ms."""
    if ms is None:
        return "-"
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")
