"""Metrics endpoints scraped over HTTP and read with prometheus-client's own parser."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import delete_prefix, new_credentials
from tests.system import isolated_settings
from worker.broker import build_broker
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.emulator.server import free_port
from worker.runtime import Runtime
from worker.testing import answers, wait_for

pytestmark = pytest.mark.slow


def scrape(port: int, timeout: float = 20) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Samples by name and labels, from the endpoint on a loopback port."""
    url = f"http://127.0.0.1:{port}/metrics"
    wait_for(lambda: answers(url), timeout=timeout, what=f"a metrics endpoint on {port}")
    text = httpx.get(url, timeout=2).text
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def total(
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]], name: str, **labels: str
) -> float:
    """The sum of a metric's samples matching the labels."""
    wanted = set(labels.items())
    return sum(v for k, v in samples.get(name, {}).items() if wanted <= set(k))


@pytest.fixture
def runtime(emulator_server: EmulatorServer) -> Iterator[Runtime]:
    """A producer-side runtime on its own prefix."""
    settings = isolated_settings(emulator_server)
    broker = build_broker(settings)
    rt = Runtime.build(settings, broker=broker)
    yield rt
    broker.close()
    rt.close()
    delete_prefix(settings.redis_url, settings.prefix)


def test_worker_metrics_add_up_across_processes(runtime: Runtime, admin: EmulatorAdmin) -> None:
    """`signq worker --processes 2`: the endpoint serves Dramatiq's and signq's metrics, summed
    over both processes."""
    creds = new_credentials()
    admin.add_account(creds.app_key, creds.master_secret)
    runtime.accounts.add("metered", creds.app_key, creds.master_secret)
    port = free_port()
    env = {
        **os.environ,
        "SIGNQ_PREFIX": runtime.settings.prefix,
        "SIGNQ_API_URL": runtime.settings.api_url,
        "SIGNQ_METRICS_PORT": str(port),
        "SIGNQ_METRICS_HOST": "127.0.0.1",
        "SIGNQ_LOG_LEVEL": "WARNING",
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "worker", "worker", "--processes", "2", "--threads", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        jobs = [runtime.jobs.query("metered", 900_000 + n).job_id for n in range(12)]
        state = runtime.store.keys.job
        wait_for(
            lambda: all(runtime.store.redis.hget(state(j), "state") == "failed" for j in jobs),
            timeout=60,
            what="the queries to run",
        )
        wait_for(
            lambda: total(scrape(port), "signq_api_requests_total", operation="query") >= 12,
            what="the metrics to add up",
        )
        samples = scrape(port)
        assert total(samples, "signq_api_requests_total", operation="query", code="50102") == 12
        assert total(samples, "signq_jobs_finished_total", op="query", state="failed") == 12
        assert total(samples, "signq_api_request_seconds_count", operation="query") == 12
        assert total(samples, "dramatiq_messages_total", actor_name="signq.run_job") >= 12
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=20)


def test_scheduler_serves_state_read_from_redis(runtime: Runtime, admin: EmulatorAdmin) -> None:
    """`signq scheduler` serves gauges of the system's state and its own counters."""
    creds = new_credentials()
    admin.add_account(creds.app_key, creds.master_secret, audit_delay=3600)
    runtime.accounts.add("watched", creds.app_key, creds.master_secret)
    runtime.tracker.track("watched", [10_001, 10_002, 10_003])
    runtime.jobs.create("watched", "一个")
    runtime.jobs.create("watched", "两个")
    port = free_port()
    env = {
        **os.environ,
        "SIGNQ_PREFIX": runtime.settings.prefix,
        "SIGNQ_METRICS_PORT": str(port),
        "SIGNQ_METRICS_HOST": "127.0.0.1",
    }
    scheduler = subprocess.Popen(
        [sys.executable, "-m", "worker", "scheduler"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            lambda: total(scrape(port), "signq_poll_lag_seconds_count") >= 3,
            what="three polls",
        )
        samples = scrape(port)
        assert total(samples, "signq_tracked_signatures") == 3
        assert total(samples, "signq_parked_jobs") == 1
        assert total(samples, "signq_gates_held") == 1
        assert total(samples, "signq_accounts", condition="total") == 1
        assert total(samples, "signq_queue_messages", kind="ready") >= 1
    finally:
        scheduler.terminate()
        scheduler.wait(timeout=20)
