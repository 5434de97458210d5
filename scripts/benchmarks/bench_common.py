"""What every benchmark scenario shares: sizes, the report rows, the emulator in its own process,
an in-process signq system, CPU and memory meters."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import redis

from worker.emulator.server import EmulatorAdmin, free_port
from worker.jsms import Credentials
from worker.runtime import Runtime
from worker.settings import Settings
from worker.testing import answers, in_process, wait_for

ROOT = Path(__file__).resolve().parents[2]


PNG_HEADER = bytes.fromhex("89504e470d0a1a0a")


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
    wait_for(lambda: answers(f"{url}/_emulator/health", process), 30, "the emulator to start")
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
    with in_process(settings, threads=threads) as running:
        yield running.runtime


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


# Finer than the tests' polling: a measured run's end is seen within 10 ms.
wait = functools.partial(wait_for, interval=0.01)


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
