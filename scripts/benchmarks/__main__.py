"""signq's benchmarks: each scenario beside the baseline a user would otherwise pick, in the same
run on the same machine, reported as ratios. Run through `scripts/bench` (see --help).

The emulator runs in its own process, so it never shares the measured process's GIL; Redis is
the one at SIGNQ_REDIS_URL (scripts/bench starts a private one when none answers). Every
scenario works under its own key prefix and removes it afterwards. Nothing here asserts a
timing: the figures are reported, with the targets beside them.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import redis
from bench_common import ROOT, Bench, Sizes
from bench_dashboard import dashboard_pages
from bench_hooks import tracing_cost, webhooks
from bench_intake import onboarding_rate, steady_memory
from bench_pipeline import gate_makespan, latency_bound, overhead
from bench_scaling import scaling
from bench_tracking import event_latency, tracking_scale

START, END = "<!-- figures:start -->", "<!-- figures:end -->"
SCENARIOS: dict[str, Callable[..., None]] = {
    "overhead": overhead,
    "latency": latency_bound,
    "gate": gate_makespan,
    "tracking": tracking_scale,
    "events": event_latency,
    "onboarding": onboarding_rate,
    "memory": steady_memory,
    "webhooks": webhooks,
    "tracing": tracing_cost,
    "dashboard": dashboard_pages,
    "scaling": scaling,
}


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
