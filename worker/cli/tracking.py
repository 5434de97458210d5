"""`signq track`, `events`, `cleanup`, `status` and `dlq`: watching and fixing."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from worker.cli.common import CliError, iso, runtime
from worker.errors import JobError
from worker.events import STREAM_ID
from worker.jsms.errors import ValidationError
from worker.jsms.models import validate_sign_id
from worker.settings import Settings, masked_url


def track(args: argparse.Namespace, settings: Settings) -> int:
    """`signq track`: watch existing signatures, from flags or a CSV (account,sign_id)."""
    rt = runtime(settings)
    wanted: dict[str, list[int]] = {}
    if args.file:
        for line, row in _csv_rows(Path(args.file), {"account", "sign_id"}):
            try:
                wanted.setdefault(row["account"], []).append(validate_sign_id(row["sign_id"]))
            except ValidationError as exc:
                raise CliError(f"{args.file}:{line}: {exc}") from None
    if args.account:
        wanted.setdefault(args.account, []).extend(validate_sign_id(s) for s in args.sign_id)
    if not wanted:
        raise CliError("give --account with --sign-id, or --file")
    added = sum(rt.tracker.track(account, ids) for account, ids in wanted.items())
    total = sum(len(ids) for ids in wanted.values())
    print(f"tracking {total} signature(s), {added} new; each is checked at the next tick")
    return 0


def events_(args: argparse.Namespace, settings: Settings) -> int:
    """`signq events`: one JSON object per line, from the stream or a consumer group."""
    import threading  # noqa: PLC0415

    from worker import events  # noqa: PLC0415

    rt = runtime(settings)
    stream = rt.store.keys.events()
    types, accounts = args.type or None, args.account or None
    if args.since and not STREAM_ID.fullmatch(args.since):
        raise CliError(
            f"--since must be a stream id such as 1795776316441-0 (or 0 for the beginning), "
            f"got {args.since!r}"
        )
    if args.group:
        consumer = events.Consumer(
            rt.store.redis, stream, args.group, args.consumer, start=args.since or "0"
        )
        stop = threading.Event()
        if not args.follow:
            consumer.ensure_group()
            stop.set()
            for entry in consumer.pending() + consumer.new(block_ms=1):
                if events.matches(entry.event, types, accounts):
                    print(json.dumps(entry.event, ensure_ascii=False), flush=True)
                consumer.ack(entry.id)
            return 0
        consumer.run(
            lambda e: print(json.dumps(e, ensure_ascii=False), flush=True),
            stop=stop,
            types=types,
            accounts=accounts,
        )
        return 0
    since = args.since or ("$" if args.follow else "0")
    for entry in events.read(rt.store.redis, stream, since=since, follow=args.follow):
        if events.matches(entry.event, types, accounts):
            print(json.dumps(entry.event, ensure_ascii=False), flush=True)
    return 0


def cleanup(args: argparse.Namespace, settings: Settings) -> int:
    """`signq cleanup`: delete tracked signatures nobody uses; `--dry-run` only lists them."""
    from worker.cleanup import Cleanup, Policy, parse_age, parse_statuses  # noqa: PLC0415

    try:
        older_than = parse_age(args.older_than)
    except JobError as exc:
        raise CliError(f"--older-than: {exc}") from None
    try:
        statuses = parse_statuses(args.status)
    except JobError as exc:
        raise CliError(f"--status: {exc}") from None
    accounts = frozenset(args.account) if args.account else None
    policy = Policy(older_than_seconds=older_than, statuses=statuses, accounts=accounts)
    report = Cleanup(runtime(settings)).run(policy, dry_run=args.dry_run)
    verb = "would delete" if args.dry_run else "deleting"
    for tracked in report.candidates:
        status = {1: "approved", 2: "rejected"}.get(tracked.status or 0, "?")
        print(
            f"{verb} {tracked.account} sign_id={tracked.sign_id} ({status}, "
            f"{tracked.sign or 'sign unknown'})"
        )
    for error in report.errors:
        print(f"error: {error}", file=sys.stderr)
    print(
        f"{len(report.candidates)} candidate(s)"
        + ("" if args.dry_run else f", {len(report.jobs)} delete job(s) enqueued")
    )
    return 1 if report.errors else 0


def _csv_rows(path: Path, columns: set[str]) -> list[tuple[int, dict[str, str]]]:
    from worker.files import csv_rows  # noqa: PLC0415

    return csv_rows(path, columns)


def status(args: argparse.Namespace, settings: Settings) -> int:
    """`signq status [--json]`."""
    from worker.status import collect  # noqa: PLC0415

    state = collect(runtime(settings))
    if args.json:
        print(json.dumps(state, ensure_ascii=False))
        return 0
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title="signq status", show_header=False)
    source = "SIGNQ_REDIS_URL" if settings.redis_explicit else "the default; set SIGNQ_REDIS_URL"
    table.add_row("redis", f"{masked_url(settings.redis_url)} ({source}), prefix {settings.prefix}")
    for name, depths in state["queues"].items():
        table.add_row(f"queue {name}", ", ".join(f"{k} {v}" for k, v in depths.items()))
    jobs = {k: v for k, v in state["jobs"]["by_state"].items() if v}
    table.add_row("jobs", ", ".join(f"{k} {v}" for k, v in jobs.items()) or "none")
    accounts = state["accounts"]
    table.add_row(
        "accounts",
        f"{accounts['total']} ({accounts['audit_pending']} with an audit "
        f"pending; paused: {', '.join(accounts['paused']) or 'none'}; blocked: "
        f"{', '.join(accounts['blocked']) or 'none'})",
    )
    table.add_row("parked jobs", str(state["parked_jobs"]))
    sigs = state["signatures"]
    table.add_row(
        "signatures",
        f"{sigs['tracked']} tracked, {sigs['due']} due; "
        + ", ".join(f"{k} {v}" for k, v in sigs["by_status"].items() if v),
    )
    sched = state["scheduler"]
    table.add_row(
        "scheduler",
        f"leader {sched['leader'] or 'none'}, {sched['ticks']} ticks, "
        f"last {sched['last_tick_ms']} ms for {sched['last_tick_due']} due",
    )
    table.add_row("events", f"{state['events']['length']} (last {state['events']['last_id']})")
    Console().print(table)
    return 0


def dlq(args: argparse.Namespace, settings: Settings) -> int:
    """`signq dlq list | show ID | retry [ID ...|--all] | purge`."""
    from worker.dlq import DeadLetters  # noqa: PLC0415

    letters = DeadLetters(runtime(settings))
    if args.action == "list":
        for letter in letters.all():
            if not args.json:
                print(
                    f"{letter.id}  {iso(letter.dead_at)}  {letter.queue}  {letter.actor}"
                    f"  {json.dumps(letter.args, ensure_ascii=False)}"
                )
                continue
            print(
                json.dumps(
                    {
                        "id": letter.id,
                        "queue": letter.queue,
                        "actor": letter.actor,
                        "args": letter.args,
                        "dead_at": letter.dead_at,
                    }
                )
            )
    elif args.action == "show":
        if not args.ids:
            raise CliError("name the dead letter to show")
        print(json.dumps(letters.show(args.ids[0]).raw, ensure_ascii=False, indent=2))
    elif args.action == "retry":
        if not args.ids and not args.all:
            raise CliError("name the dead letters to retry, or --all")
        for line in letters.retry(None if args.all else args.ids):
            print(line)
    else:
        print(f"{letters.purge()} dead letter(s) purged")
    return 0
