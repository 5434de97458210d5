"""`signq accounts`: the tenant registry, its key, and what the worker checks of it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from worker.cli.common import CliError, read_secret, runtime
from worker.errors import AccountExists
from worker.runtime import Runtime
from worker.settings import Settings


def accounts_add(args: argparse.Namespace, settings: Settings) -> int:
    """`signq accounts add NAME --app-key KEY`: the secret from a file or stdin, never argv."""
    secret = read_secret(args.master_secret_file)
    rt = runtime(settings)
    try:
        rt.accounts.add(args.name, args.app_key, secret, replace=args.replace)
    except AccountExists as exc:
        raise CliError(f"{exc}; use --replace to change its credentials") from None
    print(f"account {args.name} added" + (" (secret encrypted)" if settings.secret_key else ""))
    return 0


def accounts_import(args: argparse.Namespace, settings: Settings) -> int:
    """`signq accounts import FILE.csv`."""
    rt = runtime(settings)
    try:
        count = rt.accounts.import_csv(Path(args.file), replace=args.replace)
    except AccountExists as exc:
        raise CliError(f"{exc}; use --replace to change existing accounts") from None
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
    runtime(settings).accounts.remove(args.name)
    print(f"account {args.name} removed")
    return 0


def accounts_pause(args: argparse.Namespace, settings: Settings) -> int:
    """`signq accounts pause NAME`: its jobs wait until resume."""
    changed = runtime(settings).accounts.pause(args.name, args.reason)
    print(f"account {args.name} " + ("paused" if changed else "was already paused"))
    return 0


def accounts_resume(args: argparse.Namespace, settings: Settings) -> int:
    """`signq accounts resume NAME`: the jobs that waited run again."""
    rt = runtime(settings)
    queued = rt.accounts.resume(args.name)
    rt.dispatch.jobs(queued)
    print(f"account {args.name} resumed; {len(queued)} waiting job(s) re-queued")
    return 0


def _warn_unreadable(rt: Runtime) -> None:
    problems = rt.accounts.unreadable()
    if problems:
        print(f"signq: warning: {unreadable_problem(problems)}", file=sys.stderr)


def unreadable_problem(problems: dict[str, str]) -> str:
    names = ", ".join(sorted(problems)[:5]) + (", ..." if len(problems) > 5 else "")
    return (
        f"SIGNQ_SECRET_KEY cannot open the stored secret of {len(problems)} account(s) "
        f"({names}): {next(iter(problems.values())).split(': ', 1)[-1]}; set the key they were "
        "stored with, or re-seal them with `signq accounts rotate-key`"
    )


def accounts_rotate_key(args: argparse.Namespace, settings: Settings) -> int:
    """`signq accounts rotate-key --new-key-file F`: seal every secret with the new key."""
    from worker.settings import check_fernet_key  # noqa: PLC0415

    new_key = read_secret(args.new_key_file, prompt="new SIGNQ_SECRET_KEY: ", flag="--new-key-file")
    check_fernet_key(new_key, "the new key")
    count = runtime(settings).accounts.rotate_key(new_key, settings.secret_key)
    print(
        f"{count} account secret(s) sealed with the new key; set SIGNQ_SECRET_KEY to it and "
        "restart workers, schedulers and receivers"
    )
    return 0
