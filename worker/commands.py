"""Handlers of the operator commands: accounts, submit, jobs, worker."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from worker.accounts import AccountError
from worker.jobs import JobError, JobRecord, Submitted
from worker.jsms.errors import ValidationError
from worker.jsms.models import Image
from worker.runtime import Runtime
from worker.settings import Settings


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
    rt.enqueue(queued)
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
            print(f"{key:12} {shown}")
    return 0


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
            rt.jobs.confirm(args.job_id, args.sign_id)
        elif args.action == "abandon":
            rt.jobs.abandon(args.job_id)
        else:
            rt.jobs.cancel(args.job_id)
    except (JobError, ValidationError) as exc:
        raise CommandError(str(exc)) from None
    print(f"job {args.job_id}: {args.action}ed".replace("ee", "e"))
    return 0


def worker(args: argparse.Namespace, settings: Settings) -> int:
    """`signq worker`: Dramatiq's worker on signq's actors, as `dramatiq worker.actors`."""
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


def _read_secret(path: str | None) -> str:
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CommandError(f"--master-secret-file {path}: {exc.strerror}") from None
    if sys.stdin.isatty():
        import getpass  # noqa: PLC0415 - only for an interactive prompt

        return getpass.getpass("master secret: ").strip()
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
