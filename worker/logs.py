"""structlog setup: JSON lines off a terminal, console on one, secrets redacted by a processor.

Redaction does not rely on remembering: any key that names a secret is replaced, app keys are
masked, and every secret value registered with ``register_secret`` is scrubbed from every string
in the event (library messages included), wherever it appears.
"""

from __future__ import annotations

import logging
import sys
import threading
from collections.abc import MutableMapping
from typing import Any

import structlog

from worker import tracing
from worker.jsms.credentials import mask

REDACTED = "[redacted]"
_SECRET_KEYS = frozenset(
    {"master_secret", "secret", "password", "authorization", "secret_key", "token", "api_secret"}
)
_APP_KEY_KEYS = frozenset({"app_key", "appkey", "appKey"})
# Secrets are indexed by their first characters, so scrubbing a string costs one dictionary
# look-up per position, however many tenants' secrets are registered.
_PREFIX = 6
_by_prefix: dict[str, frozenset[str]] = {}
_short: frozenset[str] = frozenset()
_secrets_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Scrub this value from every log line from now on (master secrets, encryption keys)."""
    global _short  # noqa: PLW0603 - one registry per process, replaced whole under the lock
    if len(value) < 4:
        return
    with _secrets_lock:
        if len(value) < _PREFIX:
            _short = _short | {value}
        else:
            head = value[:_PREFIX]
            _by_prefix[head] = _by_prefix.get(head, frozenset()) | {value}


def redact(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: hide secrets by key name and by value, mask app keys."""
    for key, value in list(event.items()):
        if key.lower() in _SECRET_KEYS:
            event[key] = REDACTED
        elif key in _APP_KEY_KEYS and isinstance(value, str):
            event[key] = mask(value)
        elif isinstance(value, str):
            event[key] = scrub(value)
    return event


def scrub(text: str) -> str:
    """The text with every registered secret in it replaced."""
    found = {s for s in _short if s in text}
    index = _by_prefix
    if index:
        for start in range(len(text) - _PREFIX + 1):
            bucket = index.get(text[start : start + _PREFIX])
            if bucket:
                found.update(s for s in bucket if text.startswith(s, start))
    for secret in sorted(found, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def configure(level: str = "INFO", fmt: str = "auto") -> None:
    """Route structlog and stdlib logging (dramatiq, httpx, uvicorn) through one pipeline."""
    use_json = fmt == "json" or (fmt == "auto" and not sys.stderr.isatty())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        # trace_id/span_id of the active span when tracing is on (a dict lookup when off).
        tracing.add_trace_ids,
        redact,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False)
        if use_json
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            # Below the level, an event is dropped before any work is done on it.
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # A plain traceback, made into text before redaction, in every format: the console
            # renderer's own would print each frame's local variables, secrets among them.
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
    )
    # pika logs a refused connection as an error with its traceback; signq answers it in one
    # line of its own (the CLI) or retries (Dramatiq's consumer).
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at INFO, redis-py its handshakes at DEBUG; their failures reach
    # signq as exceptions instead.
    for chatty in ("httpx", "httpcore", "redis"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, root.level))
