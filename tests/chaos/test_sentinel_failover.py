"""Redis high availability: a real primary, a replica and three sentinels on loopback. signq runs
a load through the sentinels, the primary is killed, and work resumes on the promoted replica
by itself. What asynchronous replication lost in the window is measured, not assumed."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import redis

from tests.system import register_tenants
from worker.embedded_redis import find_redis_server
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.net import free_port
from worker.settings import Settings
from worker.testing import in_process, wait_for

MASTER = "signq-test"


@contextlib.contextmanager
def sentinel_cluster(tmp: Path) -> Iterator[tuple[subprocess.Popen[bytes], list[int], int, int]]:
    """A primary, a replica and three sentinels: (the primary's process, sentinel ports,
    primary port, replica port)."""
    binary = find_redis_server(prefer_shipped=False)
    primary, replica = free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> subprocess.Popen[bytes]:
        process = subprocess.Popen(
            [binary, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp
        )
        procs.append(process)
        return process

    common = ("--save", "", "--appendonly", "no", "--bind", "127.0.0.1")
    primary_proc = start("--port", str(primary), *common)
    start("--port", str(replica), *common, "--replicaof", "127.0.0.1", str(primary))
    sentinels = [free_port() for _ in range(3)]
    for port in sentinels:
        conf = tmp / f"sentinel-{port}.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\nlogfile {tmp / f'sentinel-{port}.log'}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            f"sentinel failover-timeout {MASTER} 5000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
        )
        start(str(conf), "--sentinel")
    try:

        def sees_all(port: int) -> bool:
            try:
                client = redis.Redis(port=port, socket_timeout=1)
                replicas = client.sentinel_slaves(MASTER)
                others = client.sentinel_sentinels(MASTER)
                client.close()
            except redis.RedisError:
                return False
            return (
                bool(replicas)
                and len(others) >= 2
                and replicas[0].get("master-link-status") == "ok"
            )

        # Every sentinel must know the replica and the two others: a failover needs a majority
        # to elect a leader, and a sentinel that has not heard the others' hellos cannot vote.
        wait_for(
            lambda: all(sees_all(port) for port in sentinels),
            timeout=30,
            what="the sentinels to see the replica and each other",
        )
        yield primary_proc, sentinels, primary, replica
    finally:
        for process in procs:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)


def test_work_resumes_on_the_promoted_replica_by_itself(
    tmp_path: Path, emulator_server: EmulatorServer, admin: EmulatorAdmin
) -> None:
    """Jobs before, during and after a failover: the primary is SIGKILLed mid-load; the
    sentinels promote the replica; every job whose record survived finishes with no help, new
    jobs run on the new primary, and the figures of what the window lost are reported."""
    with sentinel_cluster(tmp_path) as (primary_proc, sentinels, _primary, replica):
        settings = Settings.from_env().with_overrides(
            redis_url="redis://127.0.0.1:1/0",  # never used: the sentinels name the primary
            redis_sentinels=",".join(f"127.0.0.1:{p}" for p in sentinels),
            redis_master=MASTER,
            prefix="failover",
            api_url=emulator_server.api_url,
            tick_seconds=0.2,
            leader_ttl_seconds=1.0,
            lease_seconds=2.0,
            outbox_grace_seconds=1.0,
            redeliver_seconds=3.0,
            heartbeat_timeout=3.0,
        )
        with in_process(settings, threads=4, scheduler="failover") as running:
            rt = running.runtime
            accounts = register_tenants(rt, admin, 6, "ha")
            # The accounts are the test's premise, not its subject: made long before a real
            # failover. WAIT until the replica holds them, so only the load races the kill
            # (on a loaded machine the replica can lag more than the sleep below).
            copied = rt.store.redis.execute_command("WAIT", 1, 10_000)
            assert int(copied) == 1, "the replica did not acknowledge the accounts"
            before = [rt.jobs.query(a, 800_000 + i).job_id for i in range(5) for a in accounts]
            time.sleep(0.3)  # part of the load in flight when the primary dies
            primary_proc.kill()
            primary_proc.wait(timeout=10)
            started = time.monotonic()

            def promoted() -> bool:
                for port in sentinels:
                    client = redis.Redis(port=port, socket_timeout=1)
                    try:
                        if client.sentinel_get_master_addr_by_name(MASTER)[1] == replica:
                            return True
                    except redis.RedisError:
                        pass
                    finally:
                        client.close()
                return False

            try:
                # A failed election is retried after twice the failover timeout (10 s): on a
                # loaded 2-core machine the first can fail, so two retries fit in the wait.
                wait_for(promoted, timeout=45, what="the sentinels to promote the replica")
            except AssertionError as exc:
                logs = "".join(
                    f"\n--- sentinel {port}:\n"
                    + "".join(
                        (tmp_path / f"sentinel-{port}.log").read_text().splitlines(True)[-15:]
                    )
                    for port in sentinels
                )
                raise AssertionError(f"{exc}; what the sentinels said:{logs}") from None
            failover_s = time.monotonic() - started

            def submit_after() -> list[str]:
                return [rt.jobs.query(a, 900_000).job_id for a in accounts]

            after: list[str] = []
            wait_for(
                lambda: bool(after.extend(_try(submit_after)) or after),
                timeout=30,
                what="the producer to write to the new primary",
            )
            surviving = [j for j in before if rt.jobs.get(j) is not None]

            def finished() -> bool:
                return all(rt.jobs.require(j).terminal for j in surviving + after)

            wait_for(finished, timeout=90, what="every surviving and new job to finish")
            lost = len(before) - len(surviving)
            # The state client follows the failover: it now talks to the promoted replica.
            assert int(rt.store.redis.config_get("port")["port"]) == replica
            ticks = int(rt.store.redis.hget(rt.store.keys.ticks(), "count") or 0)
            wait_for(
                lambda: int(rt.store.redis.hget(rt.store.keys.ticks(), "count") or 0) > ticks,
                timeout=10,
                what="the scheduler to tick on the new primary",
            )
    print(
        f"failover: primary killed, replica promoted in {failover_s:.1f} s; "
        f"{lost} of {len(before)} jobs accepted before the kill were lost with the primary "
        f"(asynchronous replication); {len(surviving) + len(after)} finished on the new primary"
    )
    assert len(after) == len(accounts)


def _try(call: object) -> list[str]:
    try:
        return call()  # type: ignore[operator]
    except redis.RedisError:
        return []
