"""signq's benchmarks: each scenario beside the baseline a user would otherwise pick, in the same
run on the same machine, reported as ratios. Run through `scripts/bench` (see --help).

The emulator runs in its own process, so it never shares the measured process's GIL; Redis is
the one at SIGNQ_REDIS_URL (scripts/bench starts a private one when none answers). Every
scenario works under its own key prefix and removes it afterwards. Nothing here asserts a
timing: the figures are reported, with the targets beside them.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

import dramatiq
import httpx
import redis
from jsms import Jsms

from worker import actors, events, onboarding
from worker.broker import build_broker
from worker.callbacks import build_app
from worker.emulator.server import EmulatorAdmin, ThreadedServer, free_port
from worker.jsms import Credentials, JsmsClient, SignRequest
from worker.records import JobSpec
from worker.runtime import Runtime
from worker.scheduler import Scheduler
from worker.settings import Settings
from worker.testing import InlineDispatcher

ROOT = Path(__file__).resolve().parent.parent
PNG_HEADER = bytes.fromhex("89504e470d0a1a0a")
START, END = "<!-- figures:start -->", "<!-- figures:end -->"


@dataclass
class Row:
    """One line of the report."""

    scenario: str
    measured: str
    baseline: str
    ratio: str
    target: str
    met: bool | None
    note: str = ""


@dataclass
class Sizes:
    """How big each scenario runs (full, or --quick for CI)."""

    overhead: int
    latency_jobs: int
    latency_sdk: int
    gate_accounts: int
    gate_each: int
    tracked: tuple[int, int]
    due: int
    event_signatures: int
    onboard_rows: int
    memory: tuple[int, int]

    @classmethod
    def pick(cls, quick: bool) -> Sizes:
        if quick:
            return cls(150, 150, 15, 15, 3, (2_000, 20_000), 200, 20, 2_000, (600, 2_400))
        return cls(
            2_000, 2_000, 100, 100, 5, (10_000, 100_000), 1_000, 100, 10_000, (20_000, 100_000)
        )


@dataclass
class Bench:
    """Shared state of a benchmark run."""

    sizes: Sizes
    rows: list[Row] = field(default_factory=list)
    redis_url: str = field(default_factory=lambda: Settings.from_env().redis_url)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        mark = {True: "met", False: "MISSED", None: "-"}[row.met]
        print(
            f"  {row.scenario}: {row.measured} | baseline {row.baseline} | {row.ratio} "
            f"(target {row.target}: {mark}) {row.note}",
            flush=True,
        )


# ------------------------------------------------------------------------------ infrastructure


class Emulated(NamedTuple):
    """A running emulator process: its API URL, admin client and pid."""

    api: str
    admin: EmulatorAdmin
    pid: int


@contextmanager
def emulator_process(audit_delay: float = 3600.0) -> Iterator[Emulated]:
    """`signq emulator` in its own process on a free loopback port."""
    port = free_port()
    env = {**os.environ, "SIGNQ_LOG_LEVEL": "WARNING"}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "worker",
            "emulator",
            "--port",
            str(port),
            "--audit-delay",
            str(audit_delay),
            "--approval-rate",
            "1",
            "--in-use-rate",
            "0",
            "--callback-time-scale",
            "0.001",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/_emulator/health", timeout=0.5)
            break
        except httpx.TransportError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the emulator did not start") from None
            time.sleep(0.05)
    admin = EmulatorAdmin(url)
    try:
        yield Emulated(f"{url}/v1", admin, process.pid)
    finally:
        admin.close()
        process.terminate()
        process.wait(timeout=10)


@contextmanager
def system(api_url: str, threads: int = 0, **overrides: Any) -> Iterator[Runtime]:
    """A runtime on a fresh prefix; with threads, an in-process Dramatiq worker pool too."""
    settings = Settings.from_env().with_overrides(
        prefix=f"signq-bench-{uuid.uuid4().hex[:8]}",
        api_url=api_url,
        log_level="WARNING",
        **overrides,
    )
    broker = build_broker(settings)
    actors.declare(broker, settings)
    runtime = Runtime.build(settings, broker=broker)
    actors.set_runtime(runtime)
    worker = (
        dramatiq.Worker(broker, worker_threads=threads, worker_timeout=settings.worker_timeout_ms)
        if threads
        else None
    )
    if worker:
        worker.start()
    try:
        yield runtime
    finally:
        if worker:
            worker.stop()
        broker.close()
        actors.set_runtime(None)
        r = runtime.store.redis
        batch = list(r.scan_iter(match=f"{settings.prefix}:*", count=5000))
        for start in range(0, len(batch), 5000):
            r.delete(*batch[start : start + 5000])
        runtime.close()


def tenants(admin: EmulatorAdmin, count: int, **options: Any) -> list[tuple[str, Credentials]]:
    """Accounts registered at the emulator (name, credentials)."""
    made = [
        (f"b{uuid.uuid4().hex[:12]}", Credentials(uuid.uuid4().hex[:24], uuid.uuid4().hex))
        for _ in range(count)
    ]
    for start in range(0, count, 500):
        admin.add_accounts(
            [
                {"app_key": c.app_key, "master_secret": c.master_secret, **options}
                for _, c in made[start : start + 500]
            ]
        )
    return made


def register(runtime: Runtime, accounts: list[tuple[str, Credentials]]) -> None:
    """The same accounts in signq's registry."""
    for name, creds in accounts:
        runtime.accounts.add(name, creds.app_key, creds.master_secret)


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll until the predicate holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


def commands(client: redis.Redis) -> int:
    """Commands the Redis server has run so far (INFO itself left out)."""
    stats = client.info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k != "cmdstat_info")


def count_in(runtime: Runtime, state: str) -> int:
    """Jobs in a state."""
    return int(runtime.store.redis.zcard(runtime.store.keys.jobs_by_state(state)))


def sign(n: int) -> str:
    """A valid, unique-enough sign."""
    return f"店铺{n % 100000:05d}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU a process has used so far (from /proc)."""
    try:
        parts = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def cpu_meter(emulator_pid: int, client: redis.Redis) -> Iterator[dict[str, float]]:
    """CPU seconds used during the block by this process, the emulator and the Redis server."""
    redis_pid = int(client.info("server")["process_id"])
    pids = {"signq": os.getpid(), "emulator": emulator_pid, "redis": redis_pid}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    used: dict[str, float] = {}
    yield used
    used.update({name: cpu_seconds(pid) - before[name] for name, pid in pids.items()})


def cpu_note(used: dict[str, float], jobs: int) -> str:
    """CPU per job of each process, and the rate at which together they fill every core."""
    per_job = {name: seconds / jobs * 1000 for name, seconds in used.items()}
    total = sum(per_job.values())
    parts = ", ".join(f"{name} {ms:.1f}" for name, ms in per_job.items())
    cores = os.cpu_count() or 1
    return f"CPU ms/job: {parts}; {cores} cores fill at ~{cores * 1000 / total:.0f} jobs/s"


def rss_mb() -> float:
    """This process's resident memory now, in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], q: float) -> float:
    """A percentile (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


# ----------------------------------------------------------------------------------- scenarios


def overhead(bench: Bench) -> None:
    """What signq's pipeline costs over the same call made four simpler ways."""
    n, threads = bench.sizes.overhead, 8
    with emulator_process() as (api, admin, emulator_pid):
        groups = [tenants(admin, n) for _ in range(4)]
        started = time.perf_counter()
        for _, creds in groups[0]:
            sdk = Jsms(creds.app_key, creds.master_secret)
            sdk.BASE_URL = api + "/"
            answer = sdk.create_sign(sign(0))
            if "sign_id" not in answer:
                raise RuntimeError(f"the official SDK's create failed: {answer}")
        sdk_rate = n / (time.perf_counter() - started)
        with JsmsClient(api) as client:
            started = time.perf_counter()
            for _, creds in groups[1]:
                client.create(creds, SignRequest(sign(0)))
            client_rate = n / (time.perf_counter() - started)
        with system(api, threads=threads) as rt:
            done = f"{rt.settings.prefix}:bare-done"
            client = rt.client

            def bare_create(app_key: str, secret: str, text: str) -> None:
                client.create(Credentials(app_key, secret), SignRequest(text))
                rt.store.redis.incr(done)

            bare = dramatiq.actor(
                broker=rt.broker,
                actor_name="bench.bare_create",
                queue_name=rt.settings.queue,
                max_retries=0,
            )(bare_create)
            with cpu_meter(emulator_pid, rt.store.redis) as bare_used:
                started = time.perf_counter()
                for _, creds in groups[2]:
                    bare.send(creds.app_key, creds.master_secret, sign(0))
                wait(lambda: int(rt.store.redis.get(done) or 0) >= n, 300, "the bare actor")
                bare_rate = n / (time.perf_counter() - started)
        with system(api, threads=threads) as rt:
            register(rt, groups[3])
            before = commands(rt.store.redis)
            with cpu_meter(emulator_pid, rt.store.redis) as used:
                started = time.perf_counter()
                rt.jobs.submit_many(
                    [JobSpec("create", name, request=SignRequest(sign(0))) for name, _ in groups[3]]
                )
                wait(lambda: count_in(rt, "pending_audit") >= n, 300, "the pipeline")
                pipeline_rate = n / (time.perf_counter() - started)
            per_job = (commands(rt.store.redis) - before) / n
    bench.add(
        Row(
            "overhead: (a) official SDK loop",
            f"{sdk_rate:.0f} jobs/s",
            "-",
            "-",
            "-",
            None,
            f"{n} creates over {n} accounts, emulator with no latency",
        )
    )
    bench.add(
        Row(
            "overhead: (b) signq client loop",
            f"{client_rate:.0f} jobs/s",
            f"(a) {sdk_rate:.0f}",
            f"{client_rate / sdk_rate:.2f}x",
            "-",
            None,
        )
    )
    bench.add(
        Row(
            "overhead: (c) bare Dramatiq actor",
            f"{bare_rate:.0f} jobs/s",
            f"(b) {client_rate:.0f}",
            f"{bare_rate / client_rate:.2f}x",
            "-",
            None,
            f"1 process x {threads} threads; {cpu_note(bare_used, n)}",
        )
    )
    ratio = pipeline_rate / bare_rate
    bench.add(
        Row(
            "overhead: (d) full signq pipeline",
            f"{pipeline_rate:.0f} jobs/s",
            f"(c) {bare_rate:.0f}",
            f"{ratio:.2f}x",
            ">= 0.7x (c)",
            ratio >= 0.7,
            f"same pool; {per_job:.1f} Redis commands per job (those inside scripts and "
            f"Dramatiq's included); {cpu_note(used, n)}",
        )
    )


def latency_bound(bench: Bench) -> None:
    """With 100 ms of API latency, throughput against the ideal P*T/0.1 s."""
    n, threads = bench.sizes.latency_jobs, 32
    with emulator_process() as (api, admin, emulator_pid):
        admin.set_faults([{"kind": "latency", "seconds": 0.1}])
        sdk_accounts = tenants(admin, bench.sizes.latency_sdk)
        started = time.perf_counter()
        for _, creds in sdk_accounts:
            sdk = Jsms(creds.app_key, creds.master_secret)
            sdk.BASE_URL = api + "/"
            sdk.create_sign(sign(0))
        sdk_rate = len(sdk_accounts) / (time.perf_counter() - started)
        accounts = tenants(admin, n)
        with system(api, threads=threads) as rt:
            register(rt, accounts)
            with cpu_meter(emulator_pid, rt.store.redis) as used:
                started = time.perf_counter()
                rt.jobs.submit_many(
                    [JobSpec("create", name, request=SignRequest(sign(0))) for name, _ in accounts]
                )
                wait(lambda: count_in(rt, "pending_audit") >= n, 600, "the latency-bound run")
                rate = n / (time.perf_counter() - started)
    ideal = threads / 0.1
    bench.add(
        Row(
            "latency-bound: signq 1 x 32 threads",
            f"{rate:.0f} jobs/s",
            f"ideal {ideal:.0f}",
            f"{rate / ideal:.2f} of ideal",
            ">= 0.85 of ideal",
            rate / ideal >= 0.85,
            f"{n} creates, 100 ms API latency; {cpu_note(used, n)}",
        )
    )
    bench.add(
        Row(
            "latency-bound: vs official SDK loop",
            f"{rate:.0f} jobs/s",
            f"(a) {sdk_rate:.1f}",
            f"{rate / sdk_rate:.0f}x",
            ">= 20x",
            rate / sdk_rate >= 20,
            f"SDK measured on {len(sdk_accounts)} creates",
        )
    )


def gate_makespan(bench: Bench) -> None:
    """Accounts x signatures with a 1 s audit: time until all approved vs the ideal."""
    accounts_n, each, delay = bench.sizes.gate_accounts, bench.sizes.gate_each, 1.0
    ideal = each * delay
    # Polling alone is tuned to the 1 s audit; with callbacks, polling is the safety net and
    # keeps its default schedule (first look after 5 s), as it would in production.
    schedules = {
        "polling": {"tick_seconds": 0.05, "poll_initial_seconds": 0.25, "poll_max_seconds": 0.5},
        "callbacks": {"tick_seconds": 0.05},
    }
    for mode, poll in schedules.items():
        with (
            emulator_process(audit_delay=delay) as (api, admin, _pid),
            system(api, threads=16, **poll) as rt,
        ):
            receiver = ThreadedServer(build_app(rt)).start() if mode == "callbacks" else None
            options = {}
            made = [
                (f"g{uuid.uuid4().hex[:10]}", Credentials(uuid.uuid4().hex[:24], uuid.uuid4().hex))
                for _ in range(accounts_n)
            ]
            specs = []
            for name, creds in made:
                if receiver:
                    options = {"callback_url": f"{receiver.url}/callbacks/{name}"}
                specs.append(
                    {"app_key": creds.app_key, "master_secret": creds.master_secret, **options}
                )
            for start in range(0, len(specs), 200):
                admin.add_accounts(specs[start : start + 200])
            register(rt, made)
            stop = threading.Event()
            ticking = threading.Thread(target=rt.scheduler().run, args=(stop,), daemon=True)
            ticking.start()
            started = time.perf_counter()
            rt.jobs.submit_many(
                [
                    JobSpec("create", name, request=SignRequest(f"签名{k}PASS"))
                    for name, _ in made
                    for k in range(each)
                ]
            )
            wait(lambda: count_in(rt, "approved") >= accounts_n * each, 120, "all approved")
            makespan = time.perf_counter() - started
            stop.set()
            ticking.join(timeout=5)
            pending = admin.stats()["audit_pending_answers"]
            if receiver:
                receiver.stop()
        limit = 1.5 if mode == "polling" else 1.2
        bench.add(
            Row(
                f"gate makespan: {mode}",
                f"{makespan:.2f} s",
                f"ideal {ideal:.0f} s",
                f"{makespan / ideal:.2f}x",
                f"<= {limit}x; 50103 = 0",
                makespan / ideal <= limit and pending == 0,
                f"{accounts_n} accounts x {each}, audit 1 s; 50103 answers: {pending}",
            )
        )


def tracking_scale(bench: Bench) -> None:
    """A tick's time and Redis commands with many tracked and few due; memory per tracked."""
    small, large = bench.sizes.tracked
    due = bench.sizes.due
    figures = {}
    with emulator_process() as (api, _admin, _pid):
        for size in (small, large):
            with system(api) as rt:
                r = rt.store.redis
                keys = rt.store.keys
                gc.collect()
                before_memory = int(r.info("memory")["used_memory"])
                later = int(time.time() * 1000) + 86_400_000
                pipe = r.pipeline(transaction=False)
                for n in range(size):
                    account = f"acct{n % 1000:04d}"
                    member = f"{account}:{10_000 + n}"
                    pipe.hset(
                        keys.signature(account, 10_000 + n),
                        mapping={
                            "sign": sign(n),
                            "status": 1,
                            "use_status": 0,
                            "since": later,
                            "status_at": later,
                            "checks": 0,
                        },
                    )
                    pipe.zadd(keys.due(), {member: later})
                    if n % 5000 == 4999:
                        pipe.execute()
                pipe.execute()
                per_signature = (int(r.info("memory")["used_memory"]) - before_memory) / size
                members = r.zrange(keys.due(), 0, due - 1)
                # Polls go out as messages, as a real tick sends them; nothing else is sent.
                scheduler = Scheduler(
                    rt.store, rt.tracker, InlineDispatcher(run_poll=rt.dispatch.poll)
                )
                times, used = [], []
                for _ in range(5):
                    r.zadd(keys.due(), dict.fromkeys(members, 0))
                    r.delete(keys.reaping())
                    calls = commands(r)
                    started = time.perf_counter()
                    tick = scheduler.tick()
                    times.append(time.perf_counter() - started)
                    used.append(commands(r) - calls)
                    if tick.due != due:
                        raise RuntimeError(f"a tick claimed {tick.due}, not {due}")
                figures[size] = (statistics.median(times), statistics.median(used), per_signature)
    (t_small, c_small, m_small), (t_large, c_large, m_large) = figures[small], figures[large]
    ratio = t_large / t_small
    bench.add(
        Row(
            f"tracking: tick with {small:,} tracked, {due} due",
            f"{t_small * 1000:.1f} ms",
            "-",
            "-",
            "-",
            None,
            f"{c_small:.0f} Redis commands",
        )
    )
    bench.add(
        Row(
            f"tracking: tick with {large:,} tracked, {due} due",
            f"{t_large * 1000:.1f} ms",
            f"{small:,}: {t_small * 1000:.1f} ms",
            f"{ratio:.2f}x",
            "<= 1.2x",
            ratio <= 1.2,
            f"{c_large:.0f} Redis commands (includes {due // 10} poll messages sent)",
        )
    )
    memory = max(m_small, m_large)
    bench.add(
        Row(
            "tracking: Redis memory per tracked signature",
            f"{memory:.0f} bytes",
            "-",
            "-",
            "<= 400 bytes",
            memory <= 400,
            f"{m_small:.0f} at {small:,}, {m_large:.0f} at {large:,}",
        )
    )


def event_latency(bench: Bench) -> None:
    """From an audit resolving at the emulator to its event in the stream."""
    n, delay = bench.sizes.event_signatures, 1.0
    poll = {"tick_seconds": 0.05, "poll_initial_seconds": 0.25, "poll_max_seconds": 1.0}
    for mode in ("polling", "callbacks"):
        with (
            emulator_process(audit_delay=delay) as (api, admin, _pid),
            system(api, threads=8, **poll) as rt,
        ):
            receiver = ThreadedServer(build_app(rt)).start() if mode == "callbacks" else None
            made = [
                (f"e{uuid.uuid4().hex[:10]}", Credentials(uuid.uuid4().hex[:24], uuid.uuid4().hex))
                for _ in range(n)
            ]
            admin.add_accounts(
                [
                    {
                        "app_key": c.app_key,
                        "master_secret": c.master_secret,
                        **({"callback_url": f"{receiver.url}/callbacks/{a}"} if receiver else {}),
                    }
                    for a, c in made
                ]
            )
            register(rt, made)
            stop = threading.Event()
            ticking = threading.Thread(target=rt.scheduler().run, args=(stop,), daemon=True)
            ticking.start()
            rt.jobs.submit_many(
                [JobSpec("create", a, request=SignRequest("延迟PASS")) for a, _ in made]
            )
            wait(lambda: count_in(rt, "approved") >= n, 60, "all approved")
            stop.set()
            ticking.join(timeout=5)
            latencies = []
            for entry in events.read(rt.store.redis, rt.store.keys.events()):
                if entry.event["type"] != "signature.approved":
                    continue
                resolved = admin.signature(entry.event["sign_id"])["resolved_at"]
                at = datetime.fromisoformat(entry.event["at"].replace("Z", "+00:00")).timestamp()
                latencies.append(at - resolved)
            if receiver:
                receiver.stop()
        p50, p99 = pct(latencies, 50), pct(latencies, 99)
        if mode == "polling":
            # At resolution (1 s after submission) the next poll is at most the interval then
            # in effect (0.25 s doubling, capped at 1 s) away.
            bound = 1.0 + 1.0
            bench.add(
                Row(
                    "event latency: polling",
                    f"p50 {p50:.2f} s, p99 {p99:.2f} s",
                    "-",
                    "-",
                    f"p99 <= next poll + 1 s ({bound:.1f} s)",
                    p99 <= bound,
                    f"{len(latencies)} events; polls at 0.25 s doubling to 1 s",
                )
            )
        else:
            bench.add(
                Row(
                    "event latency: callbacks",
                    f"p50 {p50:.3f} s, p99 {p99:.3f} s",
                    "-",
                    "-",
                    "p99 <= 0.5 s",
                    p99 <= 0.5,
                    f"{len(latencies)} events",
                )
            )


def onboarding_rate(bench: Bench, tmp: Path) -> None:
    """Rows per second enqueued from a file, without and with an image per row."""
    rows, per_account = bench.sizes.onboard_rows, 10
    with emulator_process() as (api, admin, _pid), system(api) as rt:
        accounts = tenants(admin, rows // per_account)
        register(rt, accounts)
        images = []
        for k in range(100):
            path = tmp / f"img{k:03d}.png"
            path.write_bytes(PNG_HEADER + os.urandom(100 * 1024 - len(PNG_HEADER)))
            images.append(path.name)
        for label, with_images in (("no images", False), ("one 100 KB image per row", True)):
            path = tmp / f"rows-{with_images}.csv"
            lines = ["account,sign,images,key"]
            for n in range(rows):
                name = accounts[n % len(accounts)][0]
                image = images[n % len(images)] if with_images else ""
                lines.append(f"{name},{sign(n)},{image},k{with_images}-{n}")
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            started = time.perf_counter()
            report = onboarding.onboard(path, rt)
            rate = report.enqueued / (time.perf_counter() - started)
            if report.enqueued != rows:
                raise RuntimeError(
                    f"onboarding enqueued {report.enqueued} of {rows}: {report.bad[:3]}"
                )
            target = "-" if with_images else ">= 5,000 rows/s"
            bench.add(
                Row(
                    f"onboarding: {rows:,} rows, {label}",
                    f"{rate:,.0f} rows/s",
                    "-",
                    "-",
                    target,
                    None if with_images else rate >= 5000,
                    f"{len(accounts):,} accounts; 100 distinct images"
                    if with_images
                    else f"{len(accounts):,} accounts",
                )
            )


def steady_memory(bench: Bench) -> None:
    """Worker RSS after many jobs: does it keep growing?"""
    first, second = bench.sizes.memory
    with emulator_process() as (api, admin, _pid), system(api, threads=8) as rt:
        accounts = tenants(admin, 100)
        register(rt, accounts)

        def run(total: int) -> None:
            done = count_in(rt, "failed")
            for start in range(0, total, 2000):
                end = min(total, start + 2000)
                rt.jobs.submit_many(
                    [
                        JobSpec("query", accounts[n % 100][0], sign_id=900_000 + n)
                        for n in range(start, end)
                    ]
                )
                goal = done + end
                wait(lambda goal=goal: count_in(rt, "failed") >= goal, 600, "queries")

        run(first)
        gc.collect()
        at_first = rss_mb()
        run(second - first)
        gc.collect()
        at_second = rss_mb()
    growth = at_second / at_first - 1
    bench.add(
        Row(
            "steady memory: worker RSS",
            f"{at_second:.0f} MiB after {second:,} jobs",
            f"{at_first:.0f} MiB after {first:,}",
            f"{growth:+.1%}",
            "growth <= 10 %",
            growth <= 0.10,
            "query jobs (no gate) through 8 threads; one process runs producer and workers",
        )
    )


SCENARIOS: dict[str, Callable[..., None]] = {
    "overhead": overhead,
    "latency": latency_bound,
    "gate": gate_makespan,
    "tracking": tracking_scale,
    "events": event_latency,
    "onboarding": onboarding_rate,
    "memory": steady_memory,
}


# ------------------------------------------------------------------------------------ report


def machine(redis_url: str) -> str:
    """Facts about where the figures came from."""
    client = redis.Redis.from_url(redis_url)
    version = client.info("server")["redis_version"]
    client.close()
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "unknown",
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, Redis {version}"
    )


def commit() -> str:
    """The commit the figures were measured at (with a mark if the tree had changes)."""

    def git(*args: str) -> str:
        git_path = shutil.which("git")
        if git_path is None:
            return ""
        result = subprocess.run(
            [git_path, *args], cwd=ROOT, capture_output=True, text=True, check=False
        )
        return result.stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + (" (with uncommitted changes)" if git("status", "--porcelain") else "")


def report(bench: Bench, command: str) -> str:
    """The figures section of BENCHMARKS.md."""
    lines = [
        START,
        f"Command: `{command}`  ",
        f"Run: {datetime.now().astimezone().strftime('%Y-%m-%d %H:%M %Z')}  ",
        f"Machine: {machine(bench.redis_url)}  ",
        f"Code: commit {commit()}",
        "",
        "| scenario | measured | baseline | ratio | target | met | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in bench.rows:
        met = {True: "yes", False: "**no**", None: ""}[row.met]
        lines.append(
            f"| {row.scenario} | {row.measured} | {row.baseline} | {row.ratio} | "
            f"{row.target} | {met} | {row.note} |"
        )
    lines.append(END)
    return "\n".join(lines)


def write(path: Path, figures: str) -> None:
    """Replace the figures between the markers, keeping the hand-written analysis."""
    empty = f"# Benchmarks\n\n{START}\n{END}\n"
    text = path.read_text(encoding="utf-8") if path.exists() else empty
    if START not in text:
        text += f"\n{START}\n{END}\n"
    text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _m: figures, text, flags=re.S)
    path.write_text(text, encoding="utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes, under a minute (CI); writes only with --output",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=sorted(SCENARIOS),
        help="run only these scenarios (repeatable)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the figures (default BENCHMARKS.md for a full run)",
    )
    args = parser.parse_args()
    from worker import logs  # noqa: PLC0415

    logs.configure("ERROR", "console")  # the report is the output
    bench = Bench(Sizes.pick(args.quick))
    command = (
        "scripts/bench"
        + (" --quick" if args.quick else "")
        + "".join(f" --only {name}" for name in args.only or [])
    )
    import tempfile  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="signq-bench-") as tmp:
        for name, scenario in SCENARIOS.items():
            if args.only and name not in args.only:
                continue
            print(f"{name}:", flush=True)
            started = time.perf_counter()
            if name == "onboarding":
                scenario(bench, Path(tmp))
            else:
                scenario(bench)
            print(f"  ({time.perf_counter() - started:.1f} s)", flush=True)
    figures = report(bench, command)
    print()
    print(figures)
    # Only a complete full run replaces the figures in BENCHMARKS.md unless told where to write.
    complete = not args.quick and not args.only
    output = args.output or (ROOT / "BENCHMARKS.md" if complete else None)
    if output is not None:
        write(output, figures)
        print(f"\nwritten to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
