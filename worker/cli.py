"""The ``signq`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from redis.exceptions import AuthenticationError, RedisError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from worker import __version__
from worker import commands as commands_
from worker.settings import Settings, SettingsError, masked_url

Handler = Callable[[argparse.Namespace, Settings], int]


class UsageError(Exception):
    """A command-line argument or input file that cannot be used; printed without a traceback."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script and ``python -m worker``."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    settings: Settings | None = None
    try:
        settings = Settings.from_env()
        from worker import logs  # noqa: PLC0415 - configure logging only for real commands

        logs.configure(settings.log_level, settings.log_format)
        return handler(args, settings)
    except (SettingsError, UsageError, commands_.CommandError) as exc:
        print(f"signq: {exc}", file=sys.stderr)
        return 2
    except RedisError as exc:
        print(f"signq: {redis_problem(exc, settings)}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        # The reader went away (`signq events | head`): not an error of ours. Whatever is
        # still buffered goes nowhere instead of raising again at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        return 130


def redis_problem(exc: RedisError, settings: Settings | None) -> str:
    """One line for a person: which Redis, what went wrong, what to check."""
    where = masked_url(settings.redis_url) if settings else "SIGNQ_REDIS_URL"
    if isinstance(exc, RedisConnectionError | RedisTimeoutError):
        detail = str(exc).split(". ")[-1].rstrip(".") or type(exc).__name__
        return (
            f"cannot reach Redis at {where} ({detail}): check that it is running and "
            "that SIGNQ_REDIS_URL points at it"
        )
    if isinstance(exc, AuthenticationError):
        return f"Redis at {where} refused the password: check SIGNQ_REDIS_URL"
    return f"Redis at {where} answered an error: {exc}"


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their flags."""
    parser = argparse.ArgumentParser(
        prog="signq", description="Manage SMS signatures on the JSMS API for many tenants."
    )
    parser.add_argument("--version", action="version", version=f"signq {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    emulator = commands.add_parser("emulator", help="serve the JSMS API emulator")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=int, default=8080)
    emulator.add_argument(
        "--account",
        action="append",
        default=[],
        metavar="APP_KEY:SECRET",
        help="register an account at start (repeatable; prefer --accounts-file)",
    )
    emulator.add_argument(
        "--accounts-file",
        type=Path,
        help="CSV (app_key,master_secret[,callback_url]) or JSON list of accounts",
    )
    emulator.add_argument("--audit-delay", type=float, default=2.0, help="seconds per audit")
    emulator.add_argument("--approval-rate", type=float, default=0.9)
    emulator.add_argument("--in-use-rate", type=float, default=0.1)
    emulator.add_argument("--seed", type=int, default=0, help="seed of the audit decisions")
    emulator.add_argument("--fault-seed", type=int, default=0)
    emulator.add_argument(
        "--callback-time-scale",
        type=float,
        default=1 / 600,
        help="factor on the real callback retry schedule (3 min, 1 h, 12 h)",
    )
    emulator.add_argument(
        "--admin-token-file", type=Path, help="require this token on /_emulator admin calls"
    )
    emulator.set_defaults(handler=_emulator)

    _accounts_parser(commands)
    _submit_parser(commands)
    _jobs_parser(commands)
    _tracking_parsers(commands)
    _operator_parsers(commands)
    work = commands.add_parser("worker", help="run Dramatiq workers on signq's actors")
    work.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    work.add_argument("--threads", type=int, default=8)
    work.add_argument("--queues", nargs="*", help="only these queues (default: all)")
    work.set_defaults(handler=commands_.worker)

    demo = commands.add_parser("demo", help="run the main job end to end on embedded defaults")
    demo.add_argument("--tenants", type=int, default=30)
    demo.add_argument("--signatures", type=int, default=300)
    demo.add_argument("--reject-every", type=int, default=10, help="every Nth is rejected first")
    demo.add_argument("--audit-delay", type=float, default=0.3, help="seconds per audit")
    demo.add_argument("--threads", type=int, default=8)
    demo.add_argument("--timeout", type=float, default=120.0)
    demo.add_argument("--verbose", action="store_true", help="show the system's own logs")
    demo.add_argument(
        "--fake-redis",
        action="store_true",
        help="use an in-process fake Redis (fakeredis), as when no redis-server can run",
    )
    live = demo.add_mutually_exclusive_group()
    live.add_argument("--live", dest="live", action="store_true", default=None)
    live.add_argument("--no-live", dest="live", action="store_false")
    demo.set_defaults(handler=_demo)
    return parser


def _accounts_parser(commands: Any) -> None:
    accounts = commands.add_parser("accounts", help="the tenant registry").add_subparsers(
        title="accounts commands", metavar="ACTION", required=True
    )
    add = accounts.add_parser("add", help="register an account (secret from stdin or a file)")
    add.add_argument("name")
    add.add_argument("--app-key", required=True)
    add.add_argument("--master-secret-file", help="read the secret from this file, not stdin")
    add.add_argument("--replace", action="store_true", help="update an existing account")
    add.set_defaults(handler=commands_.accounts_add)
    imp = accounts.add_parser("import", help="register accounts from a CSV file")
    imp.add_argument("file", help="CSV with columns account, app_key, master_secret")
    imp.add_argument("--replace", action="store_true")
    imp.set_defaults(handler=commands_.accounts_import)
    rot = accounts.add_parser(
        "rotate-key", help="seal every stored secret with a new SIGNQ_SECRET_KEY (re-runnable)"
    )
    rot.add_argument("--new-key-file", help="read the new key from this file, not stdin")
    rot.set_defaults(handler=commands_.accounts_rotate_key)
    lst = accounts.add_parser("list", help="list accounts (never their secrets)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=commands_.accounts_list)
    for name, handler, text in (
        ("remove", commands_.accounts_remove, "forget an account without outstanding jobs"),
        ("pause", commands_.accounts_pause, "hold an account's jobs"),
        ("resume", commands_.accounts_resume, "run an account's held jobs again"),
    ):
        sub = accounts.add_parser(name, help=text)
        sub.add_argument("name")
        if name == "pause":
            sub.add_argument("--reason", default="paused by operator")
        sub.set_defaults(handler=handler)


def _submit_parser(commands: Any) -> None:
    submit = commands.add_parser("submit", help="enqueue a signature job").add_subparsers(
        title="operations", metavar="OP", required=True, dest="op"
    )
    for op in ("create", "modify", "delete", "query"):
        sub = submit.add_parser(op, help=f"enqueue a {op}")
        sub.add_argument("--account", required=True)
        if op != "create":
            sub.add_argument("--sign-id", required=True)
        if op in ("create", "modify"):
            sub.add_argument("--sign", required=True)
            sub.add_argument("--image", action="append", metavar="PATH", help="up to 4")
            sub.add_argument("--type", type=int)
            sub.add_argument("--remark")
        sub.add_argument("--key", help="idempotency key: the same key never enqueues twice")
        sub.add_argument("--json", action="store_true", help="print a JSON line")
        sub.set_defaults(handler=commands_.submit)


def _jobs_parser(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="inspect and settle jobs").add_subparsers(
        title="jobs commands", metavar="ACTION", required=True
    )
    show = jobs.add_parser("show", help="one job's record")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=commands_.jobs_show)
    lst = jobs.add_parser("list", help="jobs by state or account, newest first")
    lst.add_argument("--state")
    lst.add_argument("--account")
    lst.add_argument("--limit", type=int, default=100)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=commands_.jobs_list)
    for action, text in (
        ("cancel", "cancel a queued or parked job"),
        ("abandon", "give up a pending or unconfirmed audit; the gate moves on"),
        ("confirm", "settle an unconfirmed create with the sign id found at the API"),
        ("retry", "run a failed or cancelled job again"),
    ):
        sub = jobs.add_parser(action, help=text)
        sub.add_argument("job_id")
        if action == "confirm":
            sub.add_argument("--sign-id", required=True)
        sub.set_defaults(handler=commands_.jobs_action, action=action)


def _tracking_parsers(commands: Any) -> None:
    sched = commands.add_parser("scheduler", help="run the periodic work (one leader at a time)")
    sched.add_argument("--node", help="this instance's name in the lease (default: host:random)")
    sched.set_defaults(handler=commands_.scheduler)

    track = commands.add_parser("track", help="watch existing signatures")
    track.add_argument("--account")
    track.add_argument("--sign-id", action="append", default=[])
    track.add_argument("--file", help="CSV with columns account, sign_id")
    track.set_defaults(handler=commands_.track)

    events = commands.add_parser("events", help="print events as JSON lines")
    events.add_argument("--follow", action="store_true", help="keep waiting for new ones")
    events.add_argument("--group", help="read through this consumer group (acked as printed)")
    events.add_argument("--consumer", default="signq-cli")
    events.add_argument("--since", help="a stream id to start after (0: the beginning)")
    events.add_argument("--type", action="append", help="only these types (repeatable)")
    events.add_argument("--account", action="append", help="only these accounts (repeatable)")
    events.set_defaults(handler=commands_.events_)

    callbacks = commands.add_parser("callbacks", help="serve the audit-result callback receiver")
    callbacks.add_argument("--host", default="127.0.0.1")
    callbacks.add_argument("--port", type=int, default=8081)
    callbacks.set_defaults(handler=commands_.callbacks)

    cleanup = commands.add_parser("cleanup", help="delete tracked signatures nobody uses")
    cleanup.add_argument("--dry-run", action="store_true", help="list, change nothing")
    cleanup.add_argument("--older-than", default="30d", help="e.g. 30d, 12h (default 30d)")
    cleanup.add_argument("--account", action="append", help="only these accounts")
    cleanup.add_argument("--status", default="approved,rejected")
    cleanup.set_defaults(handler=commands_.cleanup)


def _operator_parsers(commands: Any) -> None:
    onboard = commands.add_parser("onboard", help="enqueue a CSV or JSONL file of signatures")
    onboard.add_argument("file", help="rows: account, sign, type, remark, images, key")
    onboard.add_argument("--strict", action="store_true", help="enqueue nothing if a row is bad")
    onboard.add_argument("--wait", action="store_true", help="follow until every row finished")
    onboard.set_defaults(handler=commands_.onboard)

    status = commands.add_parser("status", help="queues, jobs, gates, accounts, scheduler")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=commands_.status)

    dlq = commands.add_parser("dlq", help="Dramatiq's dead-letter queues")
    dlq.add_argument("action", choices=["list", "show", "retry", "purge"])
    dlq.add_argument("ids", nargs="*", help="message ids (show, retry)")
    dlq.add_argument("--all", action="store_true", help="retry every dead letter")
    dlq.add_argument("--json", action="store_true", help="list as JSON lines, times in ms")
    dlq.set_defaults(handler=commands_.dlq)


def _emulator(args: argparse.Namespace, settings: Settings) -> int:
    from worker.emulator import AuditRules, Emulator, EmulatorConfig  # noqa: PLC0415
    from worker.emulator.server import load_accounts, serve  # noqa: PLC0415

    token = args.admin_token_file.read_text().strip() if args.admin_token_file else None
    emulator = Emulator(
        EmulatorConfig(
            rules=AuditRules(
                audit_delay=args.audit_delay,
                approval_rate=args.approval_rate,
                in_use_rate=args.in_use_rate,
                seed=args.seed,
            ),
            fault_seed=args.fault_seed,
            max_image_bytes=settings.max_image_bytes,
            callback_time_scale=args.callback_time_scale,
            admin_token=token,
        )
    )
    specs: list[dict[str, object]] = []
    if args.accounts_file:
        try:
            specs.extend(load_accounts(args.accounts_file))
        except (OSError, ValueError) as exc:
            raise UsageError(str(exc)) from None
    for item in args.account:
        app_key, sep, secret = item.partition(":")
        if not sep or not app_key or not secret:
            raise UsageError(f"--account must be APP_KEY:SECRET, got {item.split(':')[0]!r}:…")
        specs.append({"app_key": app_key, "master_secret": secret})
    for spec in specs:
        emulator.add_account(
            str(spec["app_key"]),
            str(spec["master_secret"]),
            callback_url=str(spec["callback_url"]) if spec.get("callback_url") else None,
        )
    print(
        f"signq emulator: API at http://{args.host}:{args.port}/v1, "
        f"admin at /_emulator, {len(specs)} account(s)",
        file=sys.stderr,
    )
    serve(emulator, args.host, args.port)
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from worker import logs  # noqa: PLC0415
    from worker.demo import DemoOptions, run  # noqa: PLC0415

    if not args.verbose:
        logs.configure("WARNING", settings.log_format)  # the demo's own view is the output

    if args.tenants < 1 or args.signatures < args.tenants:
        raise UsageError("--tenants must be at least 1 and --signatures at least --tenants")
    options = DemoOptions(
        tenants=args.tenants,
        signatures=args.signatures,
        reject_every=args.reject_every,
        audit_delay=args.audit_delay,
        threads=args.threads,
        timeout=args.timeout,
        live=args.live,
        fake_redis=args.fake_redis,
    )
    return 0 if run(settings, options).ok else 1
