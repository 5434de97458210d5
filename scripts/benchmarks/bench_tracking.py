"""Tracking scenarios: a tick's cost at scale, and how soon a status change is heard of."""

from __future__ import annotations

import gc
import statistics
import threading
import time
import uuid
from datetime import datetime

from bench_common import (
    Bench,
    Row,
    commands,
    count_in,
    emulator_process,
    pct,
    register,
    sign,
    system,
    wait,
)

from worker import events
from worker.callbacks import build_app
from worker.emulator.server import ThreadedServer
from worker.jsms import Credentials, SignRequest
from worker.records import JobSpec
from worker.scheduler import Scheduler
from worker.testing import InlineDispatcher


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
