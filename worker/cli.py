"""The ``signq`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from worker import __version__
from worker.settings import Settings, SettingsError

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
    try:
        settings = Settings.from_env()
        from worker import logs  # noqa: PLC0415 - configure logging only for real commands

        logs.configure(settings.log_level, settings.log_format)
        return handler(args, settings)
    except (SettingsError, UsageError) as exc:
        print(f"signq: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


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

    demo = commands.add_parser("demo", help="run the main job end to end on embedded defaults")
    demo.add_argument("--audit-delay", type=float, default=0.5)
    demo.set_defaults(handler=_demo)
    return parser


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
    from worker.demo import run_round_trip  # noqa: PLC0415

    return run_round_trip(settings, audit_delay=args.audit_delay)
