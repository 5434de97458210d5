"""Scaling: the latency-bound load (100 ms API) through 1, 2 and 4 `signq worker` processes of
8 threads, on each job broker; jobs/s, CPU per job, the state Redis's cost per job (from which
the rate at which one Redis core is full follows) and, on RabbitMQ, the broker's own CPU."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench_common import (
    Bench,
    Row,
    commands,
    count_in,
    cpu_seconds,
    emulator_process,
    register,
    sign,
    system,
    tenants,
    wait,
)

from worker.jsms import SignRequest
from worker.records import JobSpec
from worker.testing import delete_rabbitmq_queues, rabbitmq_answers

RABBITMQ = os.environ.get("SIGNQ_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
THREADS = 8


def _tree_cpu(root: int) -> float:
    """CPU seconds of a process and its children (Dramatiq's worker processes)."""
    pids = [root]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == root:
            pids.append(int(stat.parent.name))
    return sum(c for c in (cpu_seconds(p) for p in pids) if not math.isnan(c))


def _rabbitmq_pid() -> int | None:
    """The RabbitMQ server's Erlang VM on this machine, if one runs here and /proc shows it."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"beam.smp") and any(b"rabbit" in arg for arg in argv):
            return int(cmdline.parent.name)
    return None


def _idle_rate(pid: int, seconds: float = 2.0) -> float:
    """CPU seconds per second a process spends with no load of ours (RabbitMQ's own timers and
    statistics), to take out of what a run measures."""
    before = cpu_seconds(pid)
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) / seconds


def scaling(bench: Bench) -> None:
    """1, 2 and 4 worker processes on each broker, against the ideal P*T/latency."""
    n = bench.sizes.latency_jobs
    brokers = [("redis", "")] + ([("rabbitmq", RABBITMQ)] if rabbitmq_answers(RABBITMQ) else [])
    cores = os.cpu_count() or 1
    with emulator_process() as (api, admin, _emulator_pid):
        admin.set_faults([{"kind": "latency", "seconds": 0.1}])
        for name, url in brokers:
            for processes in (1, 2, 4):
                queue = f"signq-scale-{uuid.uuid4().hex[:6]}"
                overrides = {"queue": queue, **({"broker_url": url} if url else {})}
                with system(api, threads=0, **overrides) as rt:
                    accounts = tenants(admin, n)
                    register(rt, accounts)
                    env = {
                        **os.environ,
                        "SIGNQ_PREFIX": rt.settings.prefix,
                        "SIGNQ_API_URL": api,
                        "SIGNQ_QUEUE": queue,
                        "SIGNQ_LOG_LEVEL": "WARNING",
                        **({"SIGNQ_BROKER_URL": url} if url else {}),
                    }
                    worker = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "worker",
                            "worker",
                            "--processes",
                            str(processes),
                            "--threads",
                            str(THREADS),
                        ],
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                        start_new_session=True,
                    )
                    rabbit = _rabbitmq_pid() if url else None
                    try:
                        time.sleep(3)  # the processes start and connect
                        rabbit_idle = _idle_rate(rabbit) if rabbit else 0.0
                        rabbit_before = cpu_seconds(rabbit) if rabbit else 0.0
                        redis_pid = int(rt.store.redis.info("server")["process_id"])
                        cpu_before = _tree_cpu(worker.pid)
                        redis_before = cpu_seconds(redis_pid)
                        calls_before = commands(rt.store.redis)
                        started = time.perf_counter()
                        rt.jobs.submit_many(
                            [
                                JobSpec("create", a, request=SignRequest(sign(0)))
                                for a, _ in accounts
                            ]
                        )
                        wait(lambda: count_in(rt, "pending_audit") >= n, 600, "the scaling run")
                        elapsed = time.perf_counter() - started
                        rate = n / elapsed
                        if rabbit:
                            used = cpu_seconds(rabbit) - rabbit_before - rabbit_idle * elapsed
                            rabbit_ms = max(0.0, used) / n * 1000
                            full = f"~{1000 / rabbit_ms:.0f}" if rabbit_ms else "-"
                            rabbit_note = (
                                f"; RabbitMQ {rabbit_ms:.2f} CPU ms per job, one core full at "
                                f"{full} jobs/s (its idle {rabbit_idle * 1000:.0f} ms/s taken out)"
                            )
                        elif url:
                            rabbit_note = "; RabbitMQ's CPU: its process is not visible here"
                        else:
                            rabbit_note = ""
                        worker_ms = (_tree_cpu(worker.pid) - cpu_before) / n * 1000
                        redis_ms = (cpu_seconds(redis_pid) - redis_before) / n * 1000
                        per_job = (commands(rt.store.redis) - calls_before) / n
                    finally:
                        os.killpg(worker.pid, signal.SIGTERM)
                        worker.wait(timeout=30)
                        if url:
                            delete_rabbitmq_queues(rt.settings)
                ideal = processes * THREADS / 0.1
                ceiling = 1000 / redis_ms if redis_ms > 0 else float("inf")
                bench.add(
                    Row(
                        f"scaling: {name} broker, {processes} x {THREADS} threads",
                        f"{rate:.0f} jobs/s",
                        f"ideal {ideal:.0f}",
                        f"{rate / ideal:.2f} of ideal",
                        "-",
                        None,
                        f"{n} creates, 100 ms API; workers {worker_ms / processes:.1f} CPU ms/job "
                        f"per process ({worker_ms:.1f} in all); Redis {redis_ms:.2f} CPU ms and "
                        f"{per_job:.0f} commands per job: one Redis core full at ~{ceiling:.0f} "
                        f"jobs/s{rabbit_note}; {cores} cores here, shared with the emulator, "
                        "Redis and RabbitMQ",
                    )
                )
