"""Intake and staying power: onboarding rows per second, and a worker's memory over time."""

from __future__ import annotations

import gc
import os
import time
from pathlib import Path

from bench_common import (
    PNG_HEADER,
    Bench,
    Row,
    count_in,
    emulator_process,
    register,
    rss_mb,
    sign,
    system,
    tenants,
    wait,
)

from worker import onboarding
from worker.records import JobSpec


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
