"""The chaos harness: a private Redis that can be killed, real signq processes, an API that can
fail, and the invariants every scenario ends with, checked from outside.

Every scenario runs its own ``redis-server`` on a free loopback port (append-only file with
``appendfsync always`` where it is killed: what ``kill -9`` may lose is then nothing that was
acknowledged), the emulator in this process behind a TCP gate that can refuse connections, and
``signq worker`` / ``scheduler`` / ``callbacks`` as real processes with their logs kept.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from tests.conftest import new_credentials
from worker.embedded_redis import find_redis_server, redis_answers
from worker.emulator import AuditRules, Emulator, EmulatorAdmin, EmulatorConfig, EmulatorServer
from worker.emulator.server import free_port
from worker.runtime import Runtime
from worker.settings import Settings

# Audits outlast the uncertain window, as real ones do (minutes to days against seconds).
AUDIT_SECONDS = 8.0
WINDOW_SECONDS = 6.0
READ_TIMEOUT = 1.0
FINAL = frozenset({"approved", "rejected", "failed", "cancelled", "deleted", "unconfirmed"})


class RedisServer:
    """A private redis-server that a scenario can kill -9 and start again on the same port."""

    def __init__(self, workdir: Path, *, aof: bool = True) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.aof = aof
        self.process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        """The URL of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start (or start again) and wait until it answers, data loaded."""
        argv = [
            find_redis_server(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.workdir),
            "--save",
            "",
            "--appendonly",
            "yes" if self.aof else "no",
            "--appendfsync",
            "always",
            "--logfile",
            str(self.workdir / "redis.log"),
        ]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not redis_answers(self.url):
            if time.monotonic() > deadline or self.process.poll() is not None:
                raise RuntimeError(f"redis-server did not start on {self.url}")
            time.sleep(0.05)

    def kill(self) -> None:
        """kill -9: no shutdown, no final save."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)

    def stop(self) -> None:
        """Stop for good."""
        self.kill()


class TcpGate:
    """A loopback TCP forwarder in front of the emulator: ``refuse()`` closes the listening
    socket (connections are refused, as with an API that is down), ``admit()`` opens it again."""

    def __init__(self, target_port: int) -> None:
        self.target = target_port
        self.port = free_port()
        self._listener: socket.socket | None = None
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []

    @property
    def url(self) -> str:
        """The API base URL through the gate."""
        return f"http://127.0.0.1:{self.port}/v1"

    def admit(self) -> None:
        """Listen again."""
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def refuse(self) -> None:
        """Stop listening and cut every open connection."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, []
        if listener is not None:
            with suppress(OSError):
                listener.shutdown(socket.SHUT_RDWR)
            listener.close()
        for conn in connections:
            with suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._connections += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pump, args=(a, b), daemon=True).start()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@dataclass
class Processes:
    """signq's own processes, started as a user starts them, logs kept per process."""

    env: dict[str, str]
    logdir: Path
    running: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def start(self, name: str, *argv: str) -> subprocess.Popen[bytes]:
        """``signq ARGV...`` in its own session (so a kill reaches its children)."""
        log = (self.logdir / f"{name}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "worker", *argv],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        self.running[name] = process
        return process

    def worker(self, name: str = "worker", threads: int = 8) -> subprocess.Popen[bytes]:
        """``signq worker`` with one process of ``threads`` threads."""
        return self.start(name, "worker", "--processes", "1", "--threads", str(threads))

    def signal(self, name: str, sig: int) -> None:
        """Send a signal to a process's whole group (Dramatiq forks worker processes)."""
        os.killpg(self.running[name].pid, sig)

    def kill(self, name: str) -> None:
        """SIGKILL a process and its children, and reap it."""
        with suppress(ProcessLookupError):
            self.signal(name, signal.SIGKILL)
        self.running.pop(name).wait(timeout=20)

    def stop(self, name: str, timeout: float = 30) -> int:
        """SIGTERM to the process itself, as a container runtime stops it (it passes the signal
        on to its own workers once: a second SIGTERM to them would mean "die now"); SIGKILL to
        the group if it does not go in time."""
        process = self.running[name]
        with suppress(ProcessLookupError):
            os.kill(process.pid, signal.SIGTERM)
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(name)
            return -9
        self.running.pop(name)
        return code

    def stop_all(self) -> None:
        """Kill what is left."""
        for name in list(self.running):
            self.kill(name)

    def grep(self, needle: str) -> str:
        """Every log line that mentions ``needle``, from every process."""
        found = []
        for path in sorted(self.logdir.glob("*.log")):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                if needle in line:
                    found.append(f"{path.stem}: {line}")
        return "\n".join(found)

    def tail(self, lines: int = 30) -> str:
        """The end of every process's log, for a failure's message."""
        out = []
        for path in sorted(self.logdir.glob("*.log")):
            text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
            out.append(f"--- {path.name}\n" + "\n".join(text))
        return "\n".join(out)


@dataclass
class Scenario:
    """One chaos scenario's world: Redis, the API, signq's processes, and a runtime to produce
    jobs and look at state from outside."""

    redis_server: RedisServer
    emulator: Emulator
    admin: EmulatorAdmin
    gate: TcpGate
    processes: Processes
    settings: Settings
    runtime: Runtime
    callback_port: int
    tenants: list[str] = field(default_factory=list)
    app_keys: dict[str, str] = field(default_factory=dict)
    jobs: dict[str, tuple[str, str]] = field(default_factory=dict)

    def add_tenants(self, count: int, *, callbacks: bool = False) -> list[str]:
        """Accounts at the emulator (pushing to the receiver when ``callbacks``) and in signq."""
        names = []
        for n in range(len(self.tenants), len(self.tenants) + count):
            creds = new_credentials()
            name = f"t{n:03d}"
            url = f"http://127.0.0.1:{self.callback_port}/callbacks/{name}" if callbacks else None
            self.admin.add_account(
                creds.app_key, creds.master_secret, audit_delay=AUDIT_SECONDS, callback_url=url
            )
            self.runtime.accounts.add(name, creds.app_key, creds.master_secret)
            self.app_keys[name] = creds.app_key
            names.append(name)
        self.tenants += names
        return names

    def submit(self, accounts: list[str], per_account: int) -> list[str]:
        """``per_account`` creates on each account, each with its own sign."""
        ids = []
        for n in range(per_account):
            for account in accounts:
                sign = f"签名{account[1:]}x{n}"
                job = self.runtime.jobs.create(account, sign).job_id
                self.jobs[job] = (account, sign)
                ids.append(job)
        return ids

    def states(self) -> Counter[str]:
        """The scenario's jobs by state."""
        pipe = self.runtime.store.redis.pipeline(transaction=False)
        for job in self.jobs:
            pipe.hget(self.runtime.store.keys.job(job), "state")
        return Counter(str(s) for s in _retrying(pipe.execute))

    def settled(self) -> bool:
        """True once every job is in a final state."""
        return set(self.states()) <= FINAL

    def wait_settled(self, timeout: float) -> None:
        """Wait (bounded) for every job to be final; fail with the states and the logs."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.settled():
                return
            time.sleep(0.5)
        raise AssertionError(
            f"not settled after {timeout}s: {dict(self.states())}\n{self.processes.tail()}"
        )

    def at_api(self, account: str, sign: str | None) -> bool:
        """Whether the API has a signature with this sign on the account."""
        ids = self.admin.signatures(self.app_keys[account])
        return any(self.admin.signature(i)["sign"] == sign for i in ids)

    def wait_adopted(self, timeout: float) -> None:
        """With callbacks: wait (bounded) until no unconfirmed create that reached the API is
        left; its audit's push settles it, an audit's length after it became unconfirmed."""
        deadline = time.monotonic() + timeout
        while True:
            waiting = [
                r
                for r in map(self.runtime.jobs.get, self.jobs)
                if r and r.state == "unconfirmed" and self.at_api(r.account, r.sign)
            ]
            if not waiting or time.monotonic() > deadline:
                return
            time.sleep(1)

    def events(self) -> list[dict[str, Any]]:
        """Every event on the stream."""
        entries = self.runtime.store.redis.xrange(self.runtime.store.keys.events())
        return [json.loads(fields["event"]) for _, fields in entries]

    def dead_letters(self) -> int:
        """Messages in Dramatiq's dead-letter queues (on Redis or RabbitMQ)."""
        from worker.dlq import DeadLetters  # noqa: PLC0415

        return len(DeadLetters(self.runtime).all())


def _retrying(call: Callable[[], Any], seconds: float = 30) -> Any:
    """Call, riding out a Redis that a scenario is restarting."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return call()
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def chaos_env(redis_url: str, prefix: str, api_url: str, **extra: str) -> dict[str, str]:
    """The environment of every signq process of a scenario: short waits, audits longer than
    the uncertain window, JSON logs at INFO."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNQ_")}
    env.update(
        {
            "SIGNQ_REDIS_URL": redis_url,
            "SIGNQ_PREFIX": prefix,
            "SIGNQ_API_URL": api_url,
            "SIGNQ_LOG_FORMAT": "json",
            "SIGNQ_LOG_LEVEL": "INFO",
            "SIGNQ_READ_TIMEOUT": str(READ_TIMEOUT),
            "SIGNQ_CONNECT_TIMEOUT": "1",
            "SIGNQ_CLIENT_MAX_RETRY_SECONDS": "2",
            "SIGNQ_CLIENT_BACKOFF_INITIAL": "0.1",
            "SIGNQ_CLIENT_BACKOFF_MAX": "0.5",
            "SIGNQ_UNCERTAIN_RETRY_WINDOW": str(WINDOW_SECONDS),
            "SIGNQ_RETRY_BACKOFF_MIN": "0.5",
            "SIGNQ_RETRY_BACKOFF_MAX": "3",
            "SIGNQ_LEASE_SECONDS": "4",
            "SIGNQ_HEARTBEAT_TIMEOUT": "5",
            "SIGNQ_OUTBOX_GRACE_SECONDS": "3",
            "SIGNQ_REDELIVER_SECONDS": "20",
            "SIGNQ_PROBE_BACKOFF_INITIAL": "1",
            "SIGNQ_PROBE_BACKOFF_MAX": "2",
            "SIGNQ_POLL_INITIAL_SECONDS": "1",
            "SIGNQ_POLL_MAX_SECONDS": "2",
            "SIGNQ_TICK_SECONDS": "0.25",
            "SIGNQ_LEADER_TTL_SECONDS": "2",
            "SIGNQ_REAP_FULL_EVERY": "8",
            "SIGNQ_CALLBACK_MAX_AGE_SECONDS": "120",
            **extra,
        }
    )
    return env


def broker_env(broker: dict[str, str]) -> dict[str, str]:
    """The ``broker`` fixture's settings overrides as the environment of signq's processes."""
    return {f"SIGNQ_{key.upper()}": value for key, value in broker.items()}


@contextmanager
def scenario(
    tmp_path: Path, *, aof: bool = True, emulator_seed: int = 7, **extra_env: str
) -> Iterator[Scenario]:
    """Start Redis and the emulator; the test starts signq's processes. Everything is stopped
    at the end, whatever happened."""
    redis_server = RedisServer(tmp_path / "redis", aof=aof)
    redis_server.start()
    emulator = Emulator(
        EmulatorConfig(
            rules=AuditRules(
                audit_delay=AUDIT_SECONDS, approval_rate=0.9, in_use_rate=0.0, seed=emulator_seed
            ),
            fault_seed=emulator_seed,
            callback_time_scale=0.001,
            tick_seconds=0.05,
        )
    )
    server = EmulatorServer(emulator).start()
    gate = TcpGate(server.port)
    gate.admit()
    admin = EmulatorAdmin(server.url)
    prefix = f"chaos{os.getpid()}x{free_port()}"
    callback_port = free_port()
    env = chaos_env(redis_server.url, prefix, gate.url, **extra_env)
    settings = Settings.from_env(env)
    runtime = Runtime.build(settings)
    logdir = tmp_path / "logs"
    logdir.mkdir()
    processes = Processes(env, logdir)
    world = Scenario(
        redis_server, emulator, admin, gate, processes, settings, runtime, callback_port
    )
    try:
        yield world
    finally:
        processes.stop_all()
        runtime.close()
        admin.close()
        gate.refuse()
        server.stop()
        redis_server.stop()


def wait_http(url: str, timeout: float = 20) -> None:
    """Wait until something answers HTTP at ``url``."""
    import httpx  # noqa: PLC0415

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with suppress(httpx.HTTPError):
            httpx.get(url, timeout=1)
            return
        time.sleep(0.1)
    raise AssertionError(f"nothing answered at {url} within {timeout}s")


def start_callbacks(world: Scenario) -> None:
    """The callback receiver, up before the emulator verifies accounts' callback URLs."""
    world.processes.start("callbacks", "callbacks", "--port", str(world.callback_port))
    wait_http(f"http://127.0.0.1:{world.callback_port}/healthz")


def check_invariants(world: Scenario, *, callbacks: bool = False) -> dict[str, Any]:
    """What every scenario ends with, checked from outside; returns figures for the report.

    - every job final, none failed, and so none of an account's jobs waits behind another;
    - ``unconfirmed`` only where an answer was lost: the create is at the API, or no answer in
      the uncertain window could tell (an API that stalled, or a probe after an earlier
      unconfirmed create); with callbacks, every unconfirmed create at the API was adopted;
    - no duplicate create at the API: each sign at most once per account;
    - every 50103 the API answered was provoked on purpose: only on an account where an
      uncertain submission (a retry, or a probe after an unconfirmed create) was made;
    - every gate free; one event per transition; no dead letters.
    """
    rt = world.runtime
    states = world.states()
    assert set(states) <= FINAL, dict(states)
    assert states.get("failed", 0) == 0, _failed(world)
    records = {job: rt.jobs.require(job) for job in world.jobs}
    stats = world.admin.stats()
    assert stats["duplicate_creates"] == 0, stats
    uncertain_accounts = {
        r.account for r in records.values() if r.raw.get("uncertain_since") or r.uncertain
    }
    undecided = 0
    for account in world.tenants:
        key = world.app_keys[account]
        account_stats = world.admin.stats(key)
        signs = [world.admin.signature(s)["sign"] for s in world.admin.signatures(key)]
        assert len(signs) == len(set(signs)), f"{account}: a sign created twice: {signs}"
        if account_stats["audit_pending_answers"]:
            assert account in uncertain_accounts, (
                f"{account}: {account_stats['audit_pending_answers']} × 50103 with nothing "
                f"uncertain: {account_stats['requests']}"
            )
        for job, record in records.items():
            if record.account != account or record.state != "unconfirmed":
                continue
            message = (record.error or {}).get("message", "")
            if record.sign in signs:
                assert not callbacks, f"{job} at the API but not adopted\n" + _log(world, job)
            else:
                assert "no decisive answer" in message, (
                    f"{job} unconfirmed but never reached the API: {message}\n" + _log(world, job)
                )
                undecided += 1
    gates = rt.store.redis.smembers(rt.store.keys.gates())
    assert not gates, f"gates still held: {gates}"
    events = world.events()
    by_job: Counter[tuple[str, str]] = Counter(
        (e["type"], e["job_id"]) for e in events if e.get("job_id")
    )
    for job, record in records.items():
        assert by_job[("job.accepted", job)] == 1, job
        resolved = record.state in ("approved", "rejected")
        assert by_job[("signature.submitted", job)] == (1 if resolved else 0), (job, record.state)
        for kind in ("approved", "rejected"):
            expected = 1 if record.state == kind else 0
            assert by_job[(f"signature.{kind}", job)] == expected, (job, kind, record.state)
        assert by_job[("job.unconfirmed", job)] <= 1, job
    assert world.dead_letters() == 0, world.processes.tail()
    return {
        "states": dict(states),
        "unconfirmed_undecided": undecided,
        "api_50103": stats["audit_pending_answers"],
        "api_requests": sum(sum(c.values()) for c in stats["requests"].values()),
        "events": len(events),
    }


def _log(world: Scenario, job: str) -> str:
    return world.processes.grep(job)[-4000:]


def _failed(world: Scenario) -> str:
    failed = [r for r in map(world.runtime.jobs.get, world.jobs) if r and r.state == "failed"]
    return "; ".join(f"{r.id} {r.error}" for r in failed[:5])


STORM_FAULTS: list[dict[str, Any]] = [
    {"kind": "error", "rate": 0.20},
    {"kind": "error", "rate": 0.05, "after": True},
    {"kind": "stall", "rate": 0.03, "seconds": READ_TIMEOUT * 1.5},
    {"kind": "slow", "rate": 0.03, "seconds": READ_TIMEOUT * 1.5},
    {"kind": "drop", "rate": 0.01},
    {"kind": "drop", "rate": 0.01, "after": True},
    {"kind": "rate_limit", "rate": 0.05, "seconds": 1},
]
