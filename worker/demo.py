"""The demo: signq's main job end to end on embedded defaults (no network, no installed Redis).

A few dozen tenants onboard a few hundred signatures through the whole system: a Redis (an
embedded redis-server unless SIGNQ_REDIS_URL is set), the API emulator, a worker pool, the
scheduler, the callback receiver (the emulator pushes its audit results to it), and a backend
that fixes rejected signatures and resubmits them. Then cleanup deletes an unused signature and
is refused one in use. Everything runs under a private key prefix that is removed at the end.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter, deque
from contextlib import ExitStack, nullcontext
from dataclasses import dataclass
from typing import Any

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from worker import events, onboarding
from worker.callbacks import build_app
from worker.cleanup import Cleanup, Policy
from worker.dashboard import serving
from worker.embedded_redis import EmbeddedRedis, find_redis_server
from worker.emulator import AuditRules, Emulator, EmulatorAdmin, EmulatorConfig, EmulatorServer
from worker.emulator.server import ThreadedServer
from worker.errors import EmbeddedRedisError
from worker.harness import in_process
from worker.jsms import Image, SignRequest
from worker.records import TERMINAL, JobSpec, Submitted
from worker.runtime import Runtime
from worker.settings import Settings, masked_url

# A 1x1 PNG: the audit image of some of the demo's signatures.
DEMO_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)
CLEANUP_TENANT = "cleanup-demo"


@dataclass(frozen=True)
class DemoOptions:
    """Size and speed of a demo run."""

    tenants: int = 30
    signatures: int = 300
    reject_every: int = 10
    audit_delay: float = 0.3
    threads: int = 8
    timeout: float = 120.0
    live: bool | None = None
    fake_redis: bool = False
    dashboard: bool = False
    dashboard_port: int = 0


@dataclass
class Outcome:
    """What the demo saw; ``ok`` is False if anything was lost or the gate was violated."""

    onboarded: int = 0
    approved: int = 0
    fixed: int = 0
    parked: int = 0
    deleted: int = 0
    refused: int = 0
    failed: int = 0
    lost: int = 0
    # Still on their way when the demo's time ran out: not lost, and not a pass either.
    unfinished: int = 0
    api_calls: int = 0
    audit_pending_answers: int = 0
    callbacks: int = 0
    elapsed: float = 0.0

    @property
    def ok(self) -> bool:
        """Everything finished, nothing lost, the gate never violated."""
        return self.lost == 0 and self.unfinished == 0 and self.audit_pending_answers == 0


def _ping(url: str) -> None:
    """Raise redis-py's ConnectionError now if nothing answers at ``url``."""
    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    finally:
        client.close()


def run(settings: Settings, options: DemoOptions, console: Console | None = None) -> Outcome:
    """Run the demo; returns its outcome (and prints the live view and the summary)."""
    console = console or Console()
    started = time.monotonic()
    with ExitStack() as stack:
        fake: Any = None
        if options.fake_redis:
            fake = _fake_redis(console, "asked for with --fake-redis")
        elif settings.redis_explicit:
            _ping(settings.redis_url)  # before any thread starts: one clear line if it is away
            console.print(f"redis: {masked_url(settings.redis_url)} (SIGNQ_REDIS_URL)")
        else:
            try:
                redis_server = stack.enter_context(
                    EmbeddedRedis(find_redis_server(prefer_shipped=True))
                )
            except EmbeddedRedisError as exc:
                fake = _fake_redis(console, str(exc))
            else:
                settings = settings.with_overrides(redis_url=redis_server.url)
                console.print(f"redis: embedded redis-server on {redis_server.url}")
        emulator = Emulator(
            EmulatorConfig(
                rules=AuditRules(
                    audit_delay=options.audit_delay, approval_rate=1.0, in_use_rate=0.0
                ),
                callback_time_scale=0.001,
            )
        )
        api = stack.enter_context(EmulatorServer(emulator))
        settings = settings.with_overrides(
            prefix=f"signq-demo-{uuid.uuid4().hex[:8]}",
            api_url=api.api_url,
            poll_initial_seconds=max(0.2, options.audit_delay),
            tick_seconds=0.2,
            leader_ttl_seconds=2.0,
            outbox_grace_seconds=2.0,
        )
        running = stack.enter_context(
            in_process(settings, threads=options.threads, scheduler="demo", **_clients(fake))
        )
        if options.dashboard:
            url = stack.enter_context(serving(running.runtime, port=options.dashboard_port))
            console.print(f"dashboard: {url}")
        demo = _Demo(running.runtime, options, emulator, api, console)
        stack.callback(demo.close)
        outcome = demo.run()
    outcome.elapsed = time.monotonic() - started
    _summary(console, outcome)
    return outcome


class _Demo:
    """The running system and the demo's own bookkeeping."""

    def __init__(
        self,
        runtime: Runtime,
        options: DemoOptions,
        emulator: Emulator,
        api: EmulatorServer,
        console: Console,
    ) -> None:
        self.runtime = runtime
        self.settings = runtime.settings
        self.options = options
        self.emulator = emulator
        self.console = console
        self.admin = EmulatorAdmin(api.url)
        self.receiver = ThreadedServer(build_app(self.runtime)).start()
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.fixes: dict[int, str] = {}
        self.latest: deque[dict[str, Any]] = deque(maxlen=8)

    def run(self) -> Outcome:
        self._background(self._fixer)
        tenants = self._tenants()
        creates = self._onboard(tenants)
        finished = self._watch(creates)
        cleanup = self._cleanup() if finished else Counter()
        return self._outcome(creates, cleanup)

    def _background(self, target: Any, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def _tenants(self) -> list[str]:
        names = [f"tenant-{n:02d}" for n in range(self.options.tenants)] + [CLEANUP_TENANT]
        specs = []
        for name in names:
            app_key, secret = f"demo{uuid.uuid4().hex[:20]}", uuid.uuid4().hex
            specs.append(
                {
                    "app_key": app_key,
                    "master_secret": secret,
                    "callback_url": f"{self.receiver.url}/callbacks/{name}",
                }
            )
            self.runtime.accounts.add(name, app_key, secret)
        self.admin.add_accounts(specs)  # each callback URL passes the echostr check first
        return names[:-1]

    def _onboard(self, tenants: list[str]) -> list[str]:
        specs = []
        for n in range(self.options.signatures):
            tenant = tenants[n % len(tenants)]
            number = n // len(tenants)
            marked = (
                self.options.reject_every
                and n % self.options.reject_every == self.options.reject_every - 1
            )
            sign = f"REJ{n:04d}" if marked else f"店铺{n:04d}"
            images = (Image(DEMO_PNG, "license"),) if n % 3 == 0 else ()
            specs.append(
                JobSpec("create", tenant, request=SignRequest(sign, images, type=1 + number % 7))
            )
        for sign in ("默认签名", "多余签名", "在用签名"):
            specs.append(JobSpec("create", CLEANUP_TENANT, request=SignRequest(sign)))
        results = self.runtime.jobs.submit_many(specs)
        return [r.job_id for r in results if isinstance(r, Submitted)]

    def _fixer(self) -> None:
        """The tenant backend: a rejected signature is fixed and resubmitted."""
        consumer = events.Consumer(
            self.runtime.store.redis, self.runtime.store.keys.events(), "demo-backend", "fixer"
        )

        def handle(event: dict[str, Any]) -> None:
            self.latest.append(event)
            if event["type"] == "signature.rejected" and "REJ" in event.get("sign", ""):
                sign_id = int(event["sign_id"])
                fixed = event["sign"].replace("REJ", "FIX")
                job = self.runtime.jobs.modify(
                    event["account"], sign_id, fixed, key=f"fix-{event['id']}"
                )
                self.fixes[sign_id] = job.job_id

        consumer.run(handle, stop=self.stop, block_ms=100, claim_idle_ms=5000)

    def _pending(self, creates: list[str]) -> tuple[Counter[str], int]:
        """Job states, and how many signatures are not yet approved for good."""
        jobs = self.runtime.jobs
        states: Counter[str] = Counter()
        unfinished = 0
        for job_id in creates:
            record = jobs.get(job_id)
            state = record.state if record else "lost"
            states[state] += 1
            if state == "rejected" and record is not None and record.sign_id in self.fixes:
                fix = jobs.get(self.fixes[record.sign_id])
                state = fix.state if fix else "lost"
            if state not in TERMINAL or state == "rejected":
                unfinished += 1
        return states, unfinished

    def _watch(self, creates: list[str]) -> bool:
        live = self.options.live if self.options.live is not None else self.console.is_terminal
        progress = Progress(
            TextColumn("signatures"), BarColumn(), TextColumn("{task.completed}/{task.total}")
        )
        task = progress.add_task("onboarding", total=len(creates))
        deadline = time.monotonic() + self.options.timeout
        last_line = 0.0
        view = Live(console=self.console, auto_refresh=False) if live else None
        with view or nullcontext():
            while time.monotonic() < deadline:
                states, unfinished = self._pending(creates)
                done = len(creates) - unfinished
                progress.update(task, completed=done)
                if view is not None:
                    view.update(self._view(progress, states), refresh=True)
                elif time.monotonic() - last_line > 2:
                    last_line = time.monotonic()
                    tally = ", ".join(f"{k} {v}" for k, v in sorted(states.items()))
                    self.console.print(f"{done}/{len(creates)} done; {tally}")
                if unfinished == 0:
                    return True
                time.sleep(0.25)
        return False

    def _view(self, progress: Progress, states: Counter[str]) -> Group:
        counts = Table(title="jobs by state")
        for state in sorted(states):
            counts.add_column(state)
        counts.add_row(*(str(states[s]) for s in sorted(states)))
        latest = Table(title="latest events")
        for column in ("type", "account", "sign", "sign_id"):
            latest.add_column(column)
        for event in list(self.latest):
            latest.add_row(
                event["type"],
                event["account"],
                str(event.get("sign", "")),
                str(event.get("sign_id", "")),
            )
        return Group(progress, counts, latest)

    def _cleanup(self) -> Counter[str]:
        """Cleanup on the cleanup tenant: its default and one in use are refused, one goes."""
        jobs = self.runtime.jobs
        records = [r for r in jobs.find(account=CLEANUP_TENANT) if r.op == "create"]
        busy = next(r for r in records if r.sign == "在用签名")
        self.admin.force(busy.sign_id or 0, use_status=1)
        report = Cleanup(self.runtime).run(
            Policy(older_than_seconds=0, accounts=frozenset({CLEANUP_TENANT})), dry_run=False
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = onboarding.states(self.runtime, report.jobs)
            if all(state in TERMINAL for state in states):
                return states
            time.sleep(0.1)
        return Counter({"unfinished": len(report.jobs)})

    def _outcome(self, creates: list[str], cleanup: Counter[str]) -> Outcome:
        jobs = self.runtime.jobs
        outcome = Outcome(onboarded=len(creates))
        for job_id in creates:
            record = jobs.get(job_id)
            if record is not None and record.state == "rejected" and record.sign_id in self.fixes:
                record = jobs.get(self.fixes[record.sign_id])
                if record is not None and record.state == "approved":
                    outcome.fixed += 1
                    continue
            if record is None:
                outcome.lost += 1
            elif record.state == "approved":
                outcome.approved += 1
            elif record.state == "failed":
                outcome.failed += 1
            elif not record.terminal:
                outcome.unfinished += 1
            else:
                outcome.lost += 1
        outcome.deleted = cleanup["deleted"]
        outcome.refused = cleanup["cancelled"]
        outcome.unfinished += cleanup["unfinished"]
        outcome.parked = sum(
            1
            for e in events.read(self.runtime.store.redis, self.runtime.store.keys.events())
            if e.event["type"] == "job.parked"
        )
        stats = self.emulator.world.stats()
        outcome.api_calls = sum(sum(codes.values()) for codes in stats["requests"].values())
        outcome.audit_pending_answers = stats["audit_pending_answers"]
        outcome.callbacks = self.emulator.callbacks["delivered"]
        return outcome

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=5)
        self.receiver.stop()
        self.admin.close()


def _clients(fake: Any) -> dict[str, Any]:
    """The state's and the broker's connections to the fallback fake server, if there is one."""
    if fake is None:
        return {}
    import fakeredis  # noqa: PLC0415 - only for the fallback

    return {
        "redis_client": fakeredis.FakeRedis(server=fake, decode_responses=True),
        "broker_client": fakeredis.FakeRedis(server=fake),
    }


def _fake_redis(console: Console, why: str) -> Any:
    """An in-process fake Redis server (fakeredis, with Lua through lupa) for the whole demo."""
    import fakeredis  # noqa: PLC0415 - only for the fallback

    console.print(f"redis: fakeredis in this process ({why})")
    return fakeredis.FakeServer()


def _summary(console: Console, outcome: Outcome) -> None:
    table = Table(title="signq demo")
    table.add_column("")
    table.add_column("count", justify="right")
    rows = [
        ("signatures onboarded", outcome.onboarded),
        ("approved", outcome.approved),
        ("rejected, fixed, then approved", outcome.fixed),
        ("submitted while their account's gate was busy", outcome.parked),
        ("deleted by cleanup", outcome.deleted),
        ("left alone by cleanup (in use, or the default)", outcome.refused),
        ("failed", outcome.failed),
        ("lost", outcome.lost),
        ("unfinished when the time ran out", outcome.unfinished),
        ("API calls", outcome.api_calls),
        ("audit callbacks delivered", outcome.callbacks),
        ("50103 answers (must be 0)", outcome.audit_pending_answers),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    table.add_row("elapsed", f"{outcome.elapsed:.1f} s")
    console.print(table)
    console.print(
        "OK: nothing lost, one audit at a time per account"
        if outcome.ok
        else "FAILED: "
        + (
            "something was lost or the gate was violated"
            if outcome.lost or outcome.audit_pending_answers
            else f"{outcome.unfinished} job(s) had not finished in --timeout (nothing lost)"
        )
    )
