"""Handlers of the operator commands: accounts, submit, jobs, worker."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

from worker.accounts import AccountError
from worker.jobs import JobError, JobRecord, Submitted
from worker.jsms.errors import ValidationError
from worker.jsms.models import Image, validate_sign_id
from worker.runtime import Runtime
from worker.settings import Settings, SettingsError, masked_url

_STREAM_ID = re.compile(r"[0-9]{1,20}(-[0-9]{1,20})?")


class CommandError(Exception):
    """A command that cannot be carried out; printed as ``signq: message`` with exit 2."""


def runtime(settings: Settings) -> Runtime:
    """The runtime for a command."""
    return Runtime.build(settings)


def accounts_add(args: argparse.Namespace, settings: Settings) -> int:
    """`signq accounts add NAME --app-key KEY`: the secret from a file or stdin, never argv."""
    secret = _read_secret(args.master_secret_file)
    rt = runtime(settings)
    try:
        rt.accounts.add(args.name, args.app_key, secret, replace=args.replace)
    except AccountError as exc:
        raise CommandError(str(exc)) from None
    print(f"account {args.name} added" + (" (secret encrypted)" if settings.secret_key else ""))
    return 0


def accounts_import(args: argparse.Namespace, settings: Settings) -> int:
    """`signq accounts import FILE.csv`."""
    rt = runtime(settings)
    try:
        count = rt.accounts.import_csv(Path(args.file), replace=args.replace)
    except AccountError as exc:
        raise CommandError(str(exc)) from None
    print(f"{count} account(s) imported")
    return 0


def accounts_list(args: argparse.Namespace, settings: Settings) -> int:
    """`signq accounts list`: names, masked app keys, status; never a secret."""
    rt = runtime(settings)
    rows = rt.accounts.all()
    if args.json:
        for a in rows:
            print(
                json.dumps(
                    {
                        "account": a.name,
                        "app_key": a.masked_key,
                        "status": a.status,
                        "blocked": a.blocked,
                        "paused_reason": a.paused_reason,
                        "encrypted": a.encrypted,
                    },
                    ensure_ascii=False,
                )
            )
        return 0
    _warn_unreadable(rt)
    for a in rows:
        flags = [a.status] + (["blocked (external audit)"] if a.blocked else [])
        reason = f" — {a.paused_reason}" if a.paused_reason else ""
        print(f"{a.name:24} {a.masked_key:12} {', '.join(flags)}{reason}")
    return 0


def accounts_remove(args: argparse.Namespace, settings: Settings) -> int:
    """`signq accounts remove NAME`."""
    try:
        runtime(settings).accounts.remove(args.name)
    except AccountError as exc:
        raise CommandError(str(exc)) from None
    print(f"account {args.name} removed")
    return 0


def accounts_pause(args: argparse.Namespace, settings: Settings) -> int:
    """`signq accounts pause NAME`: its jobs wait until resume."""
    try:
        changed = runtime(settings).accounts.pause(args.name, args.reason)
    except AccountError as exc:
        raise CommandError(str(exc)) from None
    print(f"account {args.name} " + ("paused" if changed else "was already paused"))
    return 0


def accounts_resume(args: argparse.Namespace, settings: Settings) -> int:
    """`signq accounts resume NAME`: the jobs that waited run again."""
    rt = runtime(settings)
    try:
        queued = rt.accounts.resume(args.name)
    except AccountError as exc:
        raise CommandError(str(exc)) from None
    rt.dispatch.jobs(queued)
    print(f"account {args.name} resumed; {len(queued)} waiting job(s) re-queued")
    return 0


def submit(args: argparse.Namespace, settings: Settings) -> int:
    """`signq submit create|modify|delete|query ...`: prints the job id."""
    rt = runtime(settings)
    try:
        if args.op in ("create", "modify"):
            images = tuple(_image(Path(p)) for p in args.image or ())
            fields: dict[str, Any] = {
                "images": images,
                "type": args.type,
                "remark": args.remark,
                "key": args.key,
            }
            if args.op == "create":
                result = rt.jobs.create(args.account, args.sign, **fields)
            else:
                result = rt.jobs.modify(args.account, args.sign_id, args.sign, **fields)
        elif args.op == "delete":
            result = rt.jobs.delete(args.account, args.sign_id, key=args.key)
        else:
            result = rt.jobs.query(args.account, args.sign_id, key=args.key)
    except (ValidationError, JobError, AccountError) as exc:
        raise CommandError(str(exc)) from None
    _print_submitted(result, as_json=args.json)
    return 0


def jobs_show(args: argparse.Namespace, settings: Settings) -> int:
    """`signq jobs show ID`."""
    record = _job(settings, args.job_id)
    if args.json:
        print(json.dumps(record.to_dict(), ensure_ascii=False))
        return 0
    for key, value in record.to_dict().items():
        if value not in (None, [], False):
            shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
            if key.endswith("_at") and isinstance(value, int):
                shown = _iso(value)
            print(f"{key:12} {shown}")
    return 0


def _iso(ms: int | None) -> str:
    """A time in ms as people read it (ISO-8601, UTC); JSON output keeps the ms."""
    if ms is None:
        return "-"
    from datetime import UTC, datetime  # noqa: PLC0415

    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


def jobs_list(args: argparse.Namespace, settings: Settings) -> int:
    """`signq jobs list [--state S] [--account A]`."""
    try:
        records = runtime(settings).jobs.find(
            state=args.state, account=args.account, limit=args.limit
        )
    except JobError as exc:
        raise CommandError(str(exc)) from None
    for record in records:
        if args.json:
            print(json.dumps(record.to_dict(), ensure_ascii=False))
        else:
            print(_line(record))
    return 0


def jobs_action(args: argparse.Namespace, settings: Settings) -> int:
    """`signq jobs cancel|abandon|confirm ID`."""
    rt = runtime(settings)
    try:
        if args.action == "confirm":
            rt.tracker.confirm_checked(args.job_id, args.sign_id)
        elif args.action == "retry":
            print(f"job {args.job_id}: {rt.jobs.retry(args.job_id)}")
            return 0
        elif args.action == "abandon":
            rt.jobs.abandon(args.job_id)
        else:
            rt.jobs.cancel(args.job_id)
    except (JobError, ValidationError, AccountError) as exc:
        raise CommandError(str(exc)) from None
    done = {"cancel": "cancelled", "abandon": "abandoned", "confirm": "confirmed"}
    print(f"job {args.job_id}: {done[args.action]}")
    return 0


def _warn_unreadable(rt: Runtime) -> None:
    problems = rt.accounts.unreadable()
    if problems:
        print(f"signq: warning: {_unreadable(problems)}", file=sys.stderr)


def _unreadable(problems: dict[str, str]) -> str:
    names = ", ".join(sorted(problems)[:5]) + (", ..." if len(problems) > 5 else "")
    return (
        f"SIGNQ_SECRET_KEY cannot open the stored secret of {len(problems)} account(s) "
        f"({names}): {next(iter(problems.values())).split(': ', 1)[-1]}; set the key they were "
        "stored with, or re-seal them with `signq accounts rotate-key`"
    )


def accounts_rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    """`signq accounts rotate-key --new-key-file F`: seal every secret with the new key."""
    from worker.settings import check_fernet_key  # noqa: PLC0415

    new_key = _read_secret(
        args.new_key_file, prompt="new SIGNQ_SECRET_KEY: ", flag="--new-key-file"
    )
    try:
        check_fernet_key(new_key, "the new key")
        count = runtime(settings).accounts.rotate_key(new_key, settings.secret_key)
    except (AccountError, SettingsError) as exc:
        raise CommandError(str(exc)) from None
    print(
        f"{count} account secret(s) sealed with the new key; set SIGNQ_SECRET_KEY to it and "
        "restart workers, schedulers and receivers"
    )
    return 0


def worker(args: argparse.Namespace, settings: Settings) -> int:
    """`signq worker`: Dramatiq's worker on signq's actors, as `dramatiq worker.actors`.

    Refuses to start when its SIGNQ_SECRET_KEY cannot open the registry's secrets: every
    tenant's jobs would otherwise fail on it.
    """
    from redis.exceptions import ConnectionError as RedisDown  # noqa: PLC0415

    from worker.metrics import prepare_worker  # noqa: PLC0415

    try:
        problems = runtime(settings).accounts.unreadable()
    except RedisDown:
        problems = {}  # Redis may come up after the workers; Dramatiq waits for it
    if problems:
        raise CommandError(_unreadable(problems))

    prepare_worker(settings, fresh=True)  # no worker process has started yet
    # Dramatiq reads its idle fetch timeout from this variable (the default is 1000 ms).
    os.environ["dramatiq_worker_timeout"] = str(settings.worker_timeout_ms)  # noqa: SIM112
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "worker.actors",
        "--skip-logging",
        "--processes",
        str(args.processes),
        "--threads",
        str(args.threads),
    ]
    if args.queues:
        argv += ["--queues", *args.queues]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with the worker


def _read_secret(
    path: str | None, *, prompt: str = "master secret: ", flag: str = "--master-secret-file"
) -> str:
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise CommandError(f"{flag} {path}: {why}") from None
    if sys.stdin.isatty():
        import getpass  # noqa: PLC0415 - only for an interactive prompt

        return getpass.getpass(prompt).strip()
    return sys.stdin.readline().strip()


def _image(path: Path) -> Image:
    try:
        return Image(path.read_bytes(), path.stem)
    except OSError as exc:
        raise CommandError(f"--image {path}: {exc.strerror}") from None


def _job(settings: Settings, job_id: str) -> JobRecord:
    try:
        return runtime(settings).jobs.require(job_id)
    except JobError as exc:
        raise CommandError(str(exc)) from None


def _print_submitted(result: Submitted, *, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {"job_id": result.job_id, "state": result.state, "duplicate": result.duplicate}
            )
        )
    else:
        note = " (already submitted)" if result.duplicate else ""
        print(f"{result.job_id} {result.state}{note}")


def _line(record: JobRecord) -> str:
    what = record.sign or (f"sign_id={record.sign_id}" if record.sign_id else "")
    error = f" — {record.error.get('message')}" if record.error else ""
    return f"{record.id} {record.op:6} {record.account:20} {record.state:13} {what}{error}"


def scheduler(args: argparse.Namespace, settings: Settings) -> int:
    """`signq scheduler`: tick while leader, stand by otherwise; SIGTERM resigns and exits."""
    import signal  # noqa: PLC0415
    import threading  # noqa: PLC0415

    import structlog  # noqa: PLC0415

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    rt = runtime(settings)
    if settings.metrics_port > 0:
        from prometheus_client import REGISTRY, start_http_server  # noqa: PLC0415

        from worker.status import StateCollector  # noqa: PLC0415

        REGISTRY.register(StateCollector(rt))
        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    sched = rt.scheduler(args.node)
    structlog.get_logger("worker.scheduler").info("scheduler_started", node=sched.node)
    sched.run(stop)
    return 0


def track(args: argparse.Namespace, settings: Settings) -> int:
    """`signq track`: watch existing signatures, from flags or a CSV (account,sign_id)."""
    rt = runtime(settings)
    wanted: dict[str, list[int]] = {}
    try:
        if args.file:
            for line, row in _csv_rows(Path(args.file), {"account", "sign_id"}):
                try:
                    wanted.setdefault(row["account"], []).append(validate_sign_id(row["sign_id"]))
                except ValidationError as exc:
                    raise CommandError(f"{args.file}:{line}: {exc}") from None
        if args.account:
            wanted.setdefault(args.account, []).extend(validate_sign_id(s) for s in args.sign_id)
        if not wanted:
            raise CommandError("give --account with --sign-id, or --file")
        added = sum(rt.tracker.track(account, ids) for account, ids in wanted.items())
    except (AccountError, ValidationError) as exc:
        raise CommandError(str(exc)) from None
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
    if args.since and not _STREAM_ID.fullmatch(args.since):
        raise CommandError(
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


def callbacks(args: argparse.Namespace, settings: Settings) -> int:
    """`signq callbacks`: serve the audit-result receiver."""
    import uvicorn  # noqa: PLC0415

    from worker.callbacks import build_app  # noqa: PLC0415

    if settings.metrics_port > 0:
        # Never on the receiver's own port, which faces the internet.
        from prometheus_client import start_http_server  # noqa: PLC0415

        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    uvicorn.run(
        build_app(runtime(settings)),
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
    )
    return 0


def cleanup(args: argparse.Namespace, settings: Settings) -> int:
    """`signq cleanup`: delete tracked signatures nobody uses; `--dry-run` only lists them."""
    from worker.cleanup import Cleanup, Policy, parse_age, parse_statuses  # noqa: PLC0415

    try:
        policy = Policy(
            older_than_seconds=parse_age(args.older_than),
            statuses=parse_statuses(args.status),
            accounts=frozenset(args.account) if args.account else None,
        )
    except JobError as exc:
        raise CommandError(str(exc)) from None
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
    from worker.files import FileProblem, csv_rows  # noqa: PLC0415

    try:
        return csv_rows(path, columns)
    except FileProblem as exc:
        raise CommandError(str(exc)) from None


def onboard(args: argparse.Namespace, settings: Settings) -> int:
    """`signq onboard FILE`: check every row, enqueue the good ones, optionally wait."""
    from worker import onboarding  # noqa: PLC0415

    rt = runtime(settings)
    live = sys.stdout.isatty()
    try:
        if live:
            from rich.progress import Progress  # noqa: PLC0415

            with Progress(transient=True) as bar:
                task = bar.add_task("enqueueing", total=None)

                def advance(total: int, done: list[Any]) -> None:
                    bar.update(task, total=total, advance=len(done))

                report = onboarding.onboard(
                    Path(args.file), rt, strict=args.strict, progress=advance
                )
        else:

            def lines(_total: int, done: list[Any]) -> None:
                for row, result in done:
                    if isinstance(result, Exception):
                        continue
                    print(
                        json.dumps(
                            {
                                "line": row.line,
                                "job_id": result.job_id,
                                "state": result.state,
                                "duplicate": result.duplicate,
                            }
                        )
                    )

            report = onboarding.onboard(Path(args.file), rt, strict=args.strict, progress=lines)
    except onboarding.OnboardError as exc:
        raise CommandError(str(exc)) from None
    for bad in report.bad:
        print(f"{args.file}:{bad.line}: {bad.reason}", file=sys.stderr)
    print(
        f"{report.rows} row(s): {report.enqueued} enqueued, {report.duplicates} already "
        f"submitted, {len(report.bad)} bad",
        file=sys.stderr,
    )
    if not args.wait:
        return 1 if report.bad else 0
    tally = onboarding.wait(rt, list(report.jobs.values()), on_tally=_tally_printer(live))
    print(json.dumps({"final": dict(tally)}), file=sys.stderr)
    return 1 if report.bad or tally.get("failed") else 0


def _tally_printer(live: bool) -> Any:
    last: list[str] = []

    def show(tally: Any) -> None:
        line = ", ".join(f"{state}: {n}" for state, n in sorted(tally.items()))
        if line != (last[0] if last else None):
            last[:] = [line]
            print(line if live else json.dumps({"tally": dict(tally)}), file=sys.stderr)

    return show


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
    try:
        if args.action == "list":
            for letter in letters.all():
                if not args.json:
                    print(
                        f"{letter.id}  {_iso(letter.dead_at)}  {letter.queue}  {letter.actor}"
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
                raise CommandError("name the dead letter to show")
            print(json.dumps(letters.show(args.ids[0]).raw, ensure_ascii=False, indent=2))
        elif args.action == "retry":
            if not args.ids and not args.all:
                raise CommandError("name the dead letters to retry, or --all")
            for line in letters.retry(None if args.all else args.ids):
                print(line)
        else:
            print(f"{letters.purge()} dead letter(s) purged")
    except JobError as exc:
        raise CommandError(str(exc)) from None
    return 0
