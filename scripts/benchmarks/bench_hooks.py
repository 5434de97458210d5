"""Webhook and tracing scenarios: delivery throughput against a bare actor posting the same
bodies, event-to-delivery latency, and what tracing costs the pipeline."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dramatiq
import httpx
from bench_common import (
    Bench,
    Row,
    count_in,
    emulator_process,
    register,
    sign,
    system,
    tenants,
    wait,
)

from worker import events, tracing
from worker.emulator.server import free_port
from worker.records import JobSpec
from worker.settings import Settings
from worker.testing import answers, in_process, wait_for

HERE = Path(__file__).resolve().parent


@contextmanager
def receiver_process(redis_url: str) -> Iterator[tuple[str, str]]:
    """The benchmark receiver under uvicorn on a loopback port: (its URL, its arrivals list)."""
    port = free_port()
    arrivals = f"bench-received-{uuid.uuid4().hex[:8]}"
    env = {**os.environ, "BENCH_REDIS_URL": redis_url, "BENCH_RECEIVED": arrivals}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "receiver_app:app",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--app-dir",
            str(HERE),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/hooks"
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/", process), 30, "the receiver")
        yield url, arrivals
    finally:
        process.terminate()
        process.wait(timeout=10)


def _publish(rt: Any, accounts: int, count: int) -> dict[str, float]:
    """``count`` events over ``accounts`` accounts on the stream; their ids and publish times."""
    sent = {}
    pipe = rt.store.redis.pipeline(transaction=False)
    for n in range(count):
        body = events.make("signature.approved", f"acct{n % accounts}", sign_id=10_000 + n)
        sent[json.loads(body)["id"]] = time.time()
        pipe.xadd(rt.store.keys.events(), {"event": body})
    pipe.execute()
    return sent


def _arrivals(rt: Any, arrivals: str) -> dict[str, float]:
    found = {}
    for item in rt.store.redis.lrange(arrivals, 0, -1):
        event_id, at = str(item).split()
        found.setdefault(event_id, float(at))
    return found


def webhooks(bench: Bench) -> None:
    """Deliveries/s to a local receiver against a bare actor posting the same bodies, and the
    event-to-delivery latency at the default tick."""
    n, threads, accounts = bench.sizes.overhead, 8, 100
    redis_url = Settings.from_env().redis_url
    with (
        receiver_process(redis_url) as (url, arrivals),
        system("http://127.0.0.1:9/v1", threads=threads) as rt,
    ):
        http = httpx.Client(timeout=10)
        bodies = [
            events.make("signature.approved", f"acct{i % accounts}", sign_id=i) for i in range(n)
        ]

        def bare_post(body: str) -> None:
            http.post(url, content=body, headers={"content-type": "application/json"})

        bare = dramatiq.actor(
            broker=rt.broker,
            actor_name="bench.bare_post",
            queue_name=rt.settings.queue,
            max_retries=0,
        )(bare_post)
        started = time.perf_counter()
        for body in bodies:
            bare.send(body)
        wait(lambda: rt.store.redis.llen(arrivals) >= n, 300, "the bare actor's posts")
        bare_rate = n / (time.perf_counter() - started)
        rt.store.redis.delete(arrivals)
        http.close()
    settings = Settings.from_env().with_overrides(
        prefix=f"signq-bench-{uuid.uuid4().hex[:8]}",
        log_level="WARNING",
        tick_seconds=0.05,
        leader_ttl_seconds=1.0,
        webhooks_allow_private=True,
    )
    with (
        receiver_process(redis_url) as (url, arrivals),
        in_process(settings, threads=threads, scheduler="bench") as running,
    ):
        rt = running.runtime
        rt.endpoints.add(url)
        started = time.perf_counter()
        _publish(rt, accounts, n)
        wait(lambda: rt.store.redis.llen(arrivals) >= n, 300, "the webhook deliveries")
        rate = n / (time.perf_counter() - started)
    latencies = _latency(redis_url, bench.sizes.event_signatures * 2)
    ratio = rate / bare_rate
    bench.add(
        Row(
            "webhooks: bare actor posting each event",
            f"{bare_rate:.0f} posts/s",
            "-",
            "-",
            "-",
            None,
            f"1 process x {threads} threads, receiver in its own process",
        )
    )
    bench.add(
        Row(
            "webhooks: signq deliveries",
            f"{rate:.0f} deliveries/s",
            f"bare {bare_rate:.0f}",
            f"{ratio:.2f}x",
            "-",
            None,
            f"{n} events over {accounts} accounts, one endpoint; fan-out, signing, order "
            "per account, attempt records; tick 0.05 s",
        )
    )
    p50, p99 = latencies[len(latencies) // 2], latencies[int(len(latencies) * 0.99) - 1]
    bench.add(
        Row(
            "webhooks: event -> delivery latency",
            f"p50 {p50:.2f} s, p99 {p99:.2f} s",
            "-",
            "-",
            "-",
            None,
            f"{len(latencies)} events at 20/s; default tick (1 s) fans out",
        )
    )


def _latency(redis_url: str, count: int) -> list[float]:
    """Event publish to arrival, at a steady 20 events/s, with the default scheduler tick."""
    settings = Settings.from_env().with_overrides(
        prefix=f"signq-bench-{uuid.uuid4().hex[:8]}",
        log_level="WARNING",
        webhooks_allow_private=True,
    )
    with (
        receiver_process(redis_url) as (url, arrivals),
        in_process(settings, threads=8, scheduler="bench") as running,
    ):
        rt = running.runtime
        rt.endpoints.add(url)
        sent: dict[str, float] = {}
        for n in range(count):
            sent.update(_publish(rt, 100, 1))
            time.sleep(0.05)
            del n
        wait(lambda: rt.store.redis.llen(arrivals) >= count, 120, "the deliveries")
        got = _arrivals(rt, arrivals)
    return sorted(got[i] - t for i, t in sent.items() if i in got)


def tracing_cost(bench: Bench) -> None:
    """The pipeline's rate with tracing on (spans batched to an exporter that drops them),
    every trace sampled and one in ten, against the same run with it off: three interleaved
    rounds in one process, medians compared (this machine's runs vary by 10-20 %)."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: PLC0415

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    n, threads = bench.sizes.overhead, 8
    rates: dict[str, list[float]] = {"off": [], "all": [], "tenth": []}
    with emulator_process() as (api, admin, _pid):
        modes = list(rates)
        for turn in range(3):
            # Each round in another order: the emulator's world grows run by run, and a mode
            # always run first would look faster for it.
            for mode in modes[turn:] + modes[:turn]:
                if mode == "tenth":
                    os.environ["OTEL_TRACES_SAMPLER"] = "parentbased_traceidratio"
                    os.environ["OTEL_TRACES_SAMPLER_ARG"] = "0.1"
                if mode != "off":
                    tracing.configure("otlp", span_exporter=Dropped())
                try:
                    with system(api, threads=threads) as rt:
                        group = tenants(admin, n)
                        register(rt, group)
                        started = time.perf_counter()
                        rt.jobs.submit_many(
                            [JobSpec("create", name, request=sign_request()) for name, _ in group]
                        )
                        wait(lambda: count_in(rt, "pending_audit") >= n, 300, "the pipeline")
                        rates[mode].append(n / (time.perf_counter() - started))
                finally:
                    tracing.reset()
                    os.environ.pop("OTEL_TRACES_SAMPLER", None)
                    os.environ.pop("OTEL_TRACES_SAMPLER_ARG", None)
    off, every, tenth = (statistics.median(rates[m]) for m in ("off", "all", "tenth"))
    for label, rate in (("every trace sampled", every), ("1 in 10 sampled", tenth)):
        cost = 1 - rate / off
        bench.add(
            Row(
                f"tracing: pipeline, {label}",
                f"{rate:.0f} jobs/s",
                f"off {off:.0f}",
                f"{rate / off:.2f}x",
                "cost <= 10 %",
                cost <= 0.10,
                f"{n} creates, {threads} threads; median of 3 runs, order rotated; spans batched "
                "to a dropping exporter; httpx instrumented",
            )
        )


def sign_request() -> Any:
    from worker.jsms import SignRequest  # noqa: PLC0415

    return SignRequest(sign(0))
