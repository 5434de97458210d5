"""Prometheus metrics: Dramatiq's own plus signq's, correct across worker processes.

In worker processes (``signq worker``), ``prepare_worker`` points prometheus-client's
multiprocess mode and Dramatiq's Prometheus middleware at one directory before either is
imported; the middleware's exposition process then serves every process's metrics together on
``SIGNQ_METRICS_PORT``. The scheduler serves its own (with gauges read from Redis at scrape
time) on the same setting, and the callback receiver at ``/metrics``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path

from worker.settings import Settings

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
_WAIT_BUCKETS = (0.1, 1, 5, 30, 60, 300, 900, 3600, 4 * 3600, 86_400, 7 * 86_400)


def metrics_dir(settings: Settings) -> Path:
    """Where worker processes keep their metric files."""
    return Path(tempfile.gettempdir()) / f"signq-metrics-{settings.prefix}-{settings.metrics_port}"


def prepare_worker(settings: Settings, *, fresh: bool = False) -> bool:
    """Set the environment that multiprocess metrics need; True when metrics are on.

    Must run before ``prometheus_client`` and ``dramatiq.middleware.prometheus`` are imported;
    ``fresh`` empties the directory (only before any worker process has started).
    """
    if settings.metrics_port <= 0:
        return False
    path = metrics_dir(settings)
    if fresh and path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    # Dramatiq's Prometheus middleware reads these exact lowercase names.
    os.environ["dramatiq_prom_db"] = str(path)  # noqa: SIM112
    os.environ["dramatiq_prom_port"] = str(settings.metrics_port)  # noqa: SIM112
    os.environ["dramatiq_prom_host"] = settings.metrics_host  # noqa: SIM112
    return True


class Metrics:
    """signq's own metrics."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Histogram  # noqa: PLC0415

        self.api_requests = Counter(
            "signq_api_requests_total",
            "JSMS API requests by operation and JSMS code.",
            ["operation", "code"],
        )
        self.api_seconds = Histogram(
            "signq_api_request_seconds",
            "JSMS API request latency.",
            ["operation"],
            buckets=_LATENCY_BUCKETS,
        )
        self.retries = Counter(
            "signq_job_retries_total", "Jobs rescheduled after a transient failure.", ["op"]
        )
        self.uncertain = Counter(
            "signq_uncertain_outcomes_total", "Submissions whose outcome was unknown.", ["op"]
        )
        self.jobs_finished = Counter(
            "signq_jobs_finished_total", "Jobs reaching a final state.", ["op", "state"]
        )
        self.gate_wait = Histogram(
            "signq_gate_wait_seconds",
            "Time from a submission's acceptance to its first attempt (parked behind the gate).",
            buckets=_WAIT_BUCKETS,
        )
        self.poll_lag = Histogram(
            "signq_poll_lag_seconds",
            "How late due signatures were claimed for polling.",
            buckets=_LATENCY_BUCKETS,
        )
        self.polls = Counter("signq_polls_total", "Signature polls by outcome.", ["outcome"])
        self.events = Counter("signq_events_published_total", "Events published by type.", ["type"])
        self.callbacks = Counter(
            "signq_callback_results_total", "Audit callbacks by result.", ["result"]
        )

    def count_events(self, types: list[str]) -> None:
        """The store's hook: events one applied change published."""
        for kind in types:
            self.events.labels(kind).inc()

    def observe_api(self, operation: str, code: int | None, seconds: float) -> None:
        """The JSMS client's observer: one call per HTTP attempt."""
        self.api_requests.labels(operation, str(code) if code is not None else "none").inc()
        self.api_seconds.labels(operation).observe(seconds)


_metrics: Metrics | None = None
_metrics_lock = threading.Lock()


def metrics() -> Metrics:
    """This process's metrics, created once (after ``prepare_worker``) under a lock: worker
    threads racing to register the same series would make prometheus-client refuse one."""
    global _metrics  # noqa: PLW0603 - one registry per process
    if _metrics is None:
        with _metrics_lock:
            if _metrics is None:
                _metrics = Metrics()
    return _metrics
