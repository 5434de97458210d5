"""Pipeline scenarios: signq's overhead over a bare Dramatiq actor, the latency-bound load, the
audit gate's makespan."""

from __future__ import annotations

import threading
import time
import uuid

import dramatiq
from bench_common import (
    Bench,
    Row,
    commands,
    count_in,
    cpu_meter,
    cpu_note,
    emulator_process,
    register,
    sign,
    system,
    tenants,
    wait,
)
from jsms import Jsms

from worker.callbacks import build_app
from worker.emulator.server import ThreadedServer
from worker.jsms import Credentials, JsmsClient, SignRequest
from worker.records import JobSpec


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
