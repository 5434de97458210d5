"""OpenTelemetry tracing, only when asked for: with the ``otel`` extra installed and the standard
variables set (``OTEL_TRACES_EXPORTER=otlp|console``, ``OTEL_EXPORTER_OTLP_ENDPOINT``,
``OTEL_SERVICE_NAME``, ...). Otherwise every function here is a no-op and nothing of
OpenTelemetry is imported.

Spans: ``signq.job.accept`` when a producer's jobs are accepted (its context is kept on each
job); the Dramatiq message carries the context of whoever sent it and each actor run is a
``signq.actor`` span under it (``Propagation``, a middleware: Dramatiq has none); the run of a
job is ``signq.job.run`` in the job's own trace, with the httpx client's spans under it; the
poll that reads a signature's status is ``signq.poll`` in the trace of the job that submitted
it; each webhook attempt is ``signq.webhook.deliver``. Attributes name the account, job, sign
id, op, outcome and JSMS error code; never a secret.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import dramatiq

_state: dict[str, Any] = {}
_lock = threading.Lock()
MESSAGE_OPTION = "otel"


def enabled() -> bool:
    """Whether tracing is on in this process."""
    return "tracer" in _state


def configure(exporter: str, *, span_exporter: Any = None) -> bool:
    """Turn tracing on once per process: ``exporter`` is OTEL_TRACES_EXPORTER's value
    (``otlp`` or ``console``; ``none`` or empty leaves it off); ``span_exporter`` replaces it
    (tests pass the SDK's in-memory exporter). Returns whether tracing is on. Without the
    ``otel`` extra installed, one warning and tracing stays off."""
    if enabled():
        return True
    if not exporter or exporter == "none":
        return False
    with _lock:
        if enabled():
            return True
        try:
            from opentelemetry import trace  # noqa: PLC0415 - only when tracing is asked for
            from opentelemetry.instrumentation.httpx import (  # noqa: PLC0415
                HTTPXClientInstrumentor,
            )
            from opentelemetry.sdk.resources import Resource  # noqa: PLC0415
            from opentelemetry.sdk.trace import TracerProvider  # noqa: PLC0415
            from opentelemetry.sdk.trace.export import BatchSpanProcessor  # noqa: PLC0415
        except ImportError:
            import structlog  # noqa: PLC0415

            structlog.get_logger(__name__).warning(
                "tracing_unavailable",
                why="OTEL_TRACES_EXPORTER is set but the otel extra is not installed: "
                "pip install 'signq[otel]'",
            )
            return False
        provider = TracerProvider(resource=Resource.create({"service.name": _service_name()}))
        provider.add_span_processor(BatchSpanProcessor(span_exporter or _exporter(exporter)))
        _state["provider"] = provider
        _state["tracer"] = provider.get_tracer("signq")
        _state["trace"] = trace
        HTTPXClientInstrumentor().instrument(tracer_provider=provider)
        return True


def _service_name() -> str:
    import os  # noqa: PLC0415 - OTEL_* are OpenTelemetry's own variables

    return os.environ.get("OTEL_SERVICE_NAME") or "signq"


def _exporter(name: str) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter  # noqa: PLC0415

        # On stderr: stdout is for what a command prints (a job id, JSON lines).
        return ConsoleSpanExporter(out=sys.stderr)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # noqa: PLC0415
        OTLPSpanExporter,
    )

    return OTLPSpanExporter()


def flush() -> None:
    """Export what has ended (a process's exit flushes by itself)."""
    provider = _state.get("provider")
    if provider is not None:
        provider.force_flush()


def reset() -> None:
    """Turn tracing off again in this process (tests): flushed, httpx uninstrumented."""
    with _lock:
        provider = _state.get("provider")
        if provider is None:
            return
        from opentelemetry.instrumentation.httpx import (  # noqa: PLC0415
            HTTPXClientInstrumentor,
        )

        HTTPXClientInstrumentor().uninstrument()
        provider.shutdown()
        _state.clear()


def _same_trace(carrier: Mapping[str, str], trace_id: int) -> bool:
    """Whether a W3C traceparent (``00-<trace id>-<span id>-<flags>``) is of this trace."""
    parts = carrier.get("traceparent", "").split("-")
    return len(parts) == 4 and parts[1] == format(trace_id, "032x")


def _context(carrier: Mapping[str, str] | None) -> Any:
    if not carrier:
        return None
    from opentelemetry.propagate import extract  # noqa: PLC0415

    return extract(dict(carrier))


@contextmanager
def span(
    name: str,
    *,
    kind: str = "internal",
    parent: Mapping[str, str] | None = None,
    **attributes: Any,
) -> Iterator[Any]:
    """A span around the block (None when tracing is off). Under ``parent`` (a carrier, as
    ``carrier()`` makes) when given, linked to the current span if that is of another trace;
    under the current span when there is no parent or the current span is in its trace."""
    if not enabled():
        yield None
        return
    trace = _state["trace"]
    links = []
    current = trace.get_current_span().get_span_context()
    context = None
    if parent and not (current.is_valid and _same_trace(parent, current.trace_id)):
        # Already in the parent's trace: nest under the current span (no extraction needed).
        context = _context(parent)
        if current.is_valid:
            links.append(trace.Link(current))
    with _state["tracer"].start_as_current_span(
        name,
        context=context,
        kind=getattr(trace.SpanKind, kind.upper()),
        links=links,
        attributes=_clean(attributes),
    ) as current_span:
        yield current_span


def annotate(target: Any, **attributes: Any) -> None:
    """Set attributes on a span (None: tracing is off, nothing to do)."""
    if target is not None:
        target.set_attributes(_clean(attributes))


def current() -> Any:
    """The active span, for ``annotate`` (None when tracing is off)."""
    return _state["trace"].get_current_span() if enabled() else None


def carrier() -> dict[str, str]:
    """The current trace context as W3C headers (empty when off or outside a span)."""
    if not enabled():
        return {}
    from opentelemetry.propagate import inject  # noqa: PLC0415

    headers: dict[str, str] = {}
    inject(headers)
    return headers


def _clean(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {
        f"signq.{k}": v if isinstance(v, str | bool | int | float) else str(v)
        for k, v in attributes.items()
        if v is not None and v != ""
    }


def add_trace_ids(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: ``trace_id`` and ``span_id`` of the active span, so logs and traces
    join (nothing when tracing is off or no span is active)."""
    if enabled():
        context = _state["trace"].get_current_span().get_span_context()
        if context.is_valid:
            event_dict.setdefault("trace_id", format(context.trace_id, "032x"))
            event_dict.setdefault("span_id", format(context.span_id, "016x"))
    return event_dict


class Propagation(dramatiq.Middleware):
    """Carries the sender's trace context in each message (``options['otel']``) and runs each
    message's actor in a ``signq.actor`` span under it."""

    def __init__(self) -> None:
        self._open: dict[str, Any] = {}
        self._guard = threading.Lock()

    def before_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        """Stamp the current context on the message."""
        headers = carrier()
        if headers:
            message.options[MESSAGE_OPTION] = headers

    def before_process_message(self, broker: Any, message: Any) -> None:
        """Open the actor's span under the sender's context."""
        if not enabled():
            return
        manager = span(
            f"signq.actor {message.actor_name}",
            kind="consumer",
            parent=message.options.get(MESSAGE_OPTION) or None,
            actor=message.actor_name,
            message_id=message.message_id,
            retries=message.options.get("retries", 0),
        )
        manager.__enter__()
        with self._guard:
            self._open[message.message_id] = manager

    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        """Close the actor's span, marking an error."""
        with self._guard:
            manager = self._open.pop(message.message_id, None)
        if manager is None:
            return
        if exception is not None:
            current = _state["trace"].get_current_span()
            current.record_exception(exception)
            current.set_status(_state["trace"].Status(_state["trace"].StatusCode.ERROR))
            manager.__exit__(type(exception), exception, exception.__traceback__)
        else:
            manager.__exit__(None, None, None)

    after_skip_message = after_process_message
