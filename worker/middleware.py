"""Dramatiq middleware binding each message's actor and id into the log context."""

from __future__ import annotations

from typing import Any

import structlog
from dramatiq import Middleware


class LogContext(Middleware):
    """Every log line written while a message is handled carries its actor and message id;
    the pipeline adds the job id, account and sign id. Cleared after each message."""

    def before_process_message(self, broker: Any, message: Any) -> None:
        """Bind the message's identity."""
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(
            actor=message.actor_name, message_id=message.message_id
        )

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        """Forget it."""
        structlog.contextvars.clear_contextvars()

    after_skip_message = after_process_message
