"""The ``signq`` command line: a parser, one handler per command (a module per command group),
and the errors a person can cause answered in one line (exit 2), never with a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.sentinel import MasterNotFoundError

from worker.cli.common import CliError, Handler
from worker.cli.parser import build_parser
from worker.errors import USAGE, SignqError
from worker.jsms.errors import ValidationError
from worker.settings import Settings, masked_url

__all__ = ["CliError", "build_parser", "main", "redis_problem"]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m worker``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        from worker import logs  # noqa: PLC0415 - configure logging only for real commands

        logs.configure(settings.log_level, settings.log_format)
        return handler(args, settings)
    except (SignqError, ValidationError) as exc:  # ValidationError: the JSMS client's checks
        print(f"signq: {exc}", file=sys.stderr)
        return exc.exit_code if isinstance(exc, SignqError) else USAGE
    except BrokenPipeError:
        # The reader went away (`signq events | head`): not an error of ours. Whatever is
        # still buffered goes nowhere instead of raising again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        problem = service_problem(exc, settings)
        if problem is None:
            raise
        print(f"signq: {problem}", file=sys.stderr)
        return 2


def service_problem(exc: Exception, settings: Settings | None) -> str | None:
    """One line for Redis or RabbitMQ away or refusing, or None for anything else."""
    if isinstance(exc, RedisError):
        return redis_problem(exc, settings)
    if settings is None or not type(exc).__module__.startswith("pika"):
        return None
    where = masked_url(settings.broker_url)
    kind = type(exc).__name__
    if kind == "ProbableAuthenticationError":
        return f"RabbitMQ at {where} refused the user or password: check SIGNQ_BROKER_URL"
    if kind == "ProbableAccessDeniedError":
        return (
            f"RabbitMQ at {where} refused access to the virtual host: check that it exists, "
            "that the user may use it, and the path of SIGNQ_BROKER_URL (%2F is the default)"
        )
    return (
        f"cannot reach RabbitMQ at {where} ({kind}): "
        "check that it is running and that SIGNQ_BROKER_URL points at it"
    )


def redis_problem(exc: RedisError, settings: Settings | None) -> str:
    """One line for a person: which Redis, what went wrong, what to check."""
    if settings and settings.redis_sentinels and isinstance(exc, MasterNotFoundError):
        return (
            f"no Redis primary named {settings.redis_master!r} from the sentinels at "
            f"{settings.redis_sentinels} ({_detail(exc)}): check that they run and "
            "SIGNQ_REDIS_SENTINELS and SIGNQ_REDIS_MASTER"
        )
    if settings and settings.redis_sentinels and isinstance(exc, RedisConnectionError):
        return (
            f"cannot reach the Redis primary {settings.redis_master!r} the sentinels at "
            f"{settings.redis_sentinels} name ({_detail(exc)}): check that it is running"
        )
    where = masked_url(settings.redis_url) if settings else "SIGNQ_REDIS_URL"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        detail = _detail(exc)
        return (
            f"cannot reach Redis at {where} ({detail}): check that it is running and "
            "that SIGNQ_REDIS_URL points at it"
        )
    if isinstance(exc, AuthenticationError):
        return f"Redis at {where} refused the password: check SIGNQ_REDIS_URL"
    return f"Redis at {where} answered an error: {exc}"


def _detail(exc: RedisError) -> str:
    """The cause in a few words: redis-py's messages can hold a whole client's repr (a
    sentinel's "No master found ... : <Redis<ConnectionPool...>> - cause"); only the cause."""
    text = str(exc)
    if " - " in text and "<redis." in text:
        text = text.rsplit(" - ", 1)[1]
    return text.split(". ")[-1].strip().rstrip(".")[:160] or type(exc).__name__
