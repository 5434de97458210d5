"""OpenTelemetry tracing with the SDK's in-memory exporter: one trace from `signq submit`
through a worker to the API call and the poll that resolves the audit; nothing of it, and no
OpenTelemetry import, when it is not asked for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.conftest import new_credentials
from tests.system import isolated_settings
from worker import tracing
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.testing import in_process, run_cli, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on in this process for one test, exporting to memory; off again after."""
    exporter = InMemorySpanExporter()
    assert tracing.configure("console", span_exporter=exporter)
    yield exporter
    tracing.reset()


def test_one_trace_from_submit_to_the_api_call_and_the_resolving_poll(
    spans: InMemorySpanExporter, emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """`signq submit create` opens signq.job.accept; the worker's actor span hangs under it
    through the message, the job's run and its HTTP POST under that, and the poll that sees
    the approval joins the same trace. Attributes name account, job and sign id; no secret."""
    creds = new_credentials()
    admin.add_account(creds.app_key, creds.master_secret, audit_delay=0.3)
    settings = isolated_settings(
        emulator_server, poll_initial_seconds=0.2, tick_seconds=0.05, leader_ttl_seconds=1.0
    )
    env = {**os.environ, "SIGNQ_PREFIX": settings.prefix, "SIGNQ_API_URL": settings.api_url}
    with in_process(settings, threads=2, scheduler="traced") as running:
        runtime = running.runtime
        runtime.accounts.add("traced", creds.app_key, creds.master_secret)
        result = run_cli(["submit", "create", "--account", "traced", "--sign", "追踪"], env=env)
        assert result.returncode == 0, result.stderr
        # The workers' threads log to this process's stdout too: find the printed job id.
        found = re.search(r"^([0-9a-f]{32})\b", result.stdout, re.M)
        assert found, result.stdout
        job_id = found.group(1)
        wait_for(lambda: runtime.jobs.require(job_id).state == "approved", what="approval")
        sign_id = runtime.jobs.require(job_id).sign_id
    tracing.flush()
    finished = spans.get_finished_spans()
    (accept,) = [s for s in finished if s.name == "signq.job.accept"]
    trace_id = accept.context.trace_id
    ours = [s for s in finished if s.context.trace_id == trace_id]
    names = [s.name for s in ours]
    assert "signq.actor signq.run_job" in names
    assert "signq.job.run" in names
    assert "POST" in names
    assert "signq.poll" in names
    by_id = {s.context.span_id: s for s in ours}
    actor = next(s for s in ours if s.name == "signq.actor signq.run_job")
    assert actor.parent is not None
    assert actor.parent.span_id == accept.context.span_id
    run = next(s for s in ours if s.name == "signq.job.run")
    post = next(s for s in ours if s.name == "POST")
    assert post.parent is not None
    assert by_id[post.parent.span_id].name == "signq.job.run"
    assert run.parent is not None
    assert run.parent.span_id == actor.context.span_id
    assert run.attributes["signq.job_id"] == job_id
    assert run.attributes["signq.account"] == "traced"
    assert run.attributes["signq.outcome"] == "pending_audit"
    polls = [s for s in ours if s.name == "signq.poll"]
    assert polls[-1].attributes["signq.sign_id"] == sign_id
    assert polls[-1].attributes["signq.outcome"] == "changed"
    assert accept.attributes["signq.job_id"] == job_id
    everything = repr([(s.name, dict(s.attributes or {})) for s in finished])
    assert creds.master_secret not in everything
    assert creds.app_key not in everything


def test_log_lines_carry_the_trace_ids_of_the_active_span(
    spans: InMemorySpanExporter,
) -> None:
    """A line logged inside a span names its trace and span; outside, neither."""
    with tracing.span("signq.test") as span:
        inside = tracing.add_trace_ids(None, "info", {"event": "x"})
    outside = tracing.add_trace_ids(None, "info", {"event": "y"})
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert "trace_id" not in outside


def test_without_the_variables_nothing_is_imported_or_traced(tmp_path: object) -> None:
    """No OTEL_* variables: signq imports nothing of OpenTelemetry (redis-py imports some of
    it by itself when it is installed: that is the baseline), spans are None and messages
    carry no context."""
    probe = (
        "import sys\n"
        "import redis, httpx, dramatiq\n"
        "before = {m for m in sys.modules if m.startswith('opentelemetry')}\n"
        "import worker.actors, worker.cli, worker.jobs, worker.pipeline, worker.tracker\n"
        "from worker import tracing\n"
        "from worker.settings import Settings\n"
        "s = Settings.from_env()\n"
        "assert s.otel_exporter == '', s.otel_exporter\n"
        "assert not tracing.configure(s.otel_exporter)\n"
        "with tracing.span('x', a=1) as span: assert span is None\n"
        "assert tracing.carrier() == {}\n"
        "after = {m for m in sys.modules if m.startswith('opentelemetry')}\n"
        "assert after == before, sorted(after - before)\n"
        "assert 'opentelemetry.instrumentation.httpx' not in after\n"
        "print('untraced')\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "untraced"


def test_otel_variables_are_read_and_checked() -> None:
    """OTEL_TRACES_EXPORTER is read as OpenTelemetry defines it; an OTLP endpoint alone means
    otlp; an exporter signq cannot use is named."""
    from worker.errors import SettingsError  # noqa: PLC0415
    from worker.settings import Settings  # noqa: PLC0415

    assert Settings.from_env({"OTEL_TRACES_EXPORTER": "console"}).otel_exporter == "console"
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert Settings.from_env(endpoint).otel_exporter == "otlp"
    assert Settings.from_env({}).otel_exporter == ""
    with pytest.raises(SettingsError, match="OTEL_TRACES_EXPORTER must be otlp, console or none"):
        Settings.from_env({"OTEL_TRACES_EXPORTER": "zipkin"})
