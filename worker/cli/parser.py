"""Every subcommand and its flags, each handed to its command group's handler."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import worker.cli.accounts as account_commands
import worker.cli.jobs as job_commands
import worker.cli.services as service_commands
import worker.cli.tracking as tracking_commands
import worker.cli.webhooks as webhook_commands
from worker import __version__


def port(value: str) -> int:
    """A TCP port for a server to listen on: 1-65535, or 0 for a free one."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, got {value!r}") from None
    if not 0 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0-65535 (0: a free port), got {number}")
    return number


def positive(value: str) -> int:
    """A count of at least one (processes, threads)."""
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their flags."""
    parser = argparse.ArgumentParser(
        prog="signq", description="Manage SMS signatures on the JSMS API for many tenants."
    )
    parser.add_argument("--version", action="version", version=f"signq {__version__}")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    emulator = commands.add_parser("emulator", help="serve the JSMS API emulator")
    emulator.add_argument("--host", default="127.0.0.1")
    emulator.add_argument("--port", type=port, default=8080, help="0: a free port")
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
    emulator.set_defaults(handler=service_commands.emulator)

    _accounts_parser(commands)
    _submit_parser(commands)
    _jobs_parser(commands)
    _tracking_parsers(commands)
    _operator_parsers(commands)
    webhook_commands.add_parser(commands)
    dash = commands.add_parser("dashboard", help="serve the operator's dashboard in the browser")
    dash.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    dash.add_argument("--port", type=port, default=8090, help="0: a free port")
    dash.add_argument("--read-only", action="store_true", help="show everything, change nothing")
    dash.set_defaults(handler=service_commands.dashboard)
    work = commands.add_parser("worker", help="run Dramatiq workers on signq's actors")
    work.add_argument("--processes", type=positive, default=os.cpu_count() or 1)
    work.add_argument("--threads", type=positive, default=8)
    work.add_argument("--queues", nargs="*", help="only these queues (default: all)")
    work.set_defaults(handler=service_commands.worker)

    demo = commands.add_parser("demo", help="run the main job end to end on embedded defaults")
    demo.add_argument("--tenants", type=int, default=30)
    demo.add_argument("--signatures", type=int, default=300)
    demo.add_argument("--reject-every", type=int, default=10, help="every Nth is rejected first")
    demo.add_argument("--audit-delay", type=float, default=0.3, help="seconds per audit")
    demo.add_argument("--threads", type=int, default=8)
    demo.add_argument("--timeout", type=float, default=120.0)
    demo.add_argument("--verbose", action="store_true", help="show the system's own logs")
    demo.add_argument(
        "--dashboard",
        action="store_true",
        help="serve the dashboard while the demo runs (its URL, with the token, is printed)",
    )
    demo.add_argument("--dashboard-port", type=port, default=0, help="default: a free port")
    demo.add_argument(
        "--fake-redis",
        action="store_true",
        help="use an in-process fake Redis (fakeredis), as when no redis-server can run",
    )
    live = demo.add_mutually_exclusive_group()
    live.add_argument("--live", dest="live", action="store_true", default=None)
    live.add_argument("--no-live", dest="live", action="store_false")
    demo.set_defaults(handler=service_commands.demo)
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
    add.set_defaults(handler=account_commands.accounts_add)
    imp = accounts.add_parser("import", help="register accounts from a CSV file")
    imp.add_argument("file", help="CSV with columns account, app_key, master_secret")
    imp.add_argument("--replace", action="store_true")
    imp.set_defaults(handler=account_commands.accounts_import)
    rot = accounts.add_parser(
        "rotate-key", help="seal every stored secret with a new SIGNQ_SECRET_KEY (re-runnable)"
    )
    rot.add_argument("--new-key-file", help="read the new key from this file, not stdin")
    rot.set_defaults(handler=account_commands.accounts_rotate_key)
    lst = accounts.add_parser("list", help="list accounts (never their secrets)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=account_commands.accounts_list)
    for name, handler, text in (
        ("remove", account_commands.accounts_remove, "forget an account without outstanding jobs"),
        ("pause", account_commands.accounts_pause, "hold an account's jobs"),
        ("resume", account_commands.accounts_resume, "run an account's held jobs again"),
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
        sub.set_defaults(handler=job_commands.submit)


def _jobs_parser(commands: Any) -> None:
    jobs = commands.add_parser("jobs", help="inspect and settle jobs").add_subparsers(
        title="jobs commands", metavar="ACTION", required=True
    )
    show = jobs.add_parser("show", help="one job's record")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(handler=job_commands.jobs_show)
    lst = jobs.add_parser("list", help="jobs by state or account, newest first")
    lst.add_argument("--state")
    lst.add_argument("--account")
    lst.add_argument("--limit", type=int, default=100)
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=job_commands.jobs_list)
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
        sub.set_defaults(handler=job_commands.jobs_action, action=action)


def _tracking_parsers(commands: Any) -> None:
    sched = commands.add_parser("scheduler", help="run the periodic work (one leader at a time)")
    sched.add_argument("--node", help="this instance's name in the lease (default: host:random)")
    sched.set_defaults(handler=service_commands.scheduler)

    track = commands.add_parser("track", help="watch existing signatures")
    track.add_argument("--account")
    track.add_argument("--sign-id", action="append", default=[])
    track.add_argument("--file", help="CSV with columns account, sign_id")
    track.set_defaults(handler=tracking_commands.track)

    events = commands.add_parser("events", help="print events as JSON lines")
    events.add_argument("--follow", action="store_true", help="keep waiting for new ones")
    events.add_argument("--group", help="read through this consumer group (acked as printed)")
    events.add_argument("--consumer", default="signq-cli")
    events.add_argument("--since", help="a stream id to start after (0: the beginning)")
    events.add_argument("--type", action="append", help="only these types (repeatable)")
    events.add_argument("--account", action="append", help="only these accounts (repeatable)")
    events.set_defaults(handler=tracking_commands.events_)

    callbacks = commands.add_parser("callbacks", help="serve the audit-result callback receiver")
    callbacks.add_argument("--host", default="127.0.0.1")
    callbacks.add_argument("--port", type=port, default=8081, help="0: a free port")
    callbacks.set_defaults(handler=service_commands.callbacks)

    cleanup = commands.add_parser("cleanup", help="delete tracked signatures nobody uses")
    cleanup.add_argument("--dry-run", action="store_true", help="list, change nothing")
    cleanup.add_argument("--older-than", default="30d", help="e.g. 30d, 12h (default 30d)")
    cleanup.add_argument("--account", action="append", help="only these accounts")
    cleanup.add_argument("--status", default="approved,rejected")
    cleanup.set_defaults(handler=tracking_commands.cleanup)


def _operator_parsers(commands: Any) -> None:
    onboard = commands.add_parser("onboard", help="enqueue a CSV or JSONL file of signatures")
    onboard.add_argument("file", help="rows: account, sign, type, remark, images, key")
    onboard.add_argument("--strict", action="store_true", help="enqueue nothing if a row is bad")
    onboard.add_argument("--wait", action="store_true", help="follow until every row finished")
    onboard.set_defaults(handler=job_commands.onboard)

    mig = commands.add_parser(
        "migrate", help="move Redis data of an earlier signq into this key layout"
    )
    mig.add_argument(
        "--check", action="store_true", help="only say which layout the data is in (exit 1: old)"
    )
    mig.set_defaults(handler=service_commands.migrate)

    status = commands.add_parser("status", help="queues, jobs, gates, accounts, scheduler")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=tracking_commands.status)

    dlq = commands.add_parser("dlq", help="Dramatiq's dead-letter queues")
    dlq.add_argument("action", choices=["list", "show", "retry", "purge"])
    dlq.add_argument("ids", nargs="*", help="message ids (show, retry)")
    dlq.add_argument("--all", action="store_true", help="retry every dead letter")
    dlq.add_argument("--json", action="store_true", help="list as JSON lines, times in ms")
    dlq.set_defaults(handler=tracking_commands.dlq)
