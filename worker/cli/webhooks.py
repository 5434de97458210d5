"""`signq webhooks ...`: register endpoints and see, test and replay their deliveries."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from worker.cli.common import CliError, iso, runtime
from worker.settings import Settings


def add(args: argparse.Namespace, settings: Settings) -> int:
    """`signq webhooks add URL`: prints the endpoint's id, and its secret once if made here."""
    secret = None
    if args.secret_file:
        try:
            secret = Path(args.secret_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise CliError(f"--secret-file {args.secret_file}: {why}") from None
    endpoint, made = runtime(settings).endpoints.add(
        args.url, types=args.type, accounts=args.account, secret=secret
    )
    print(f"webhook endpoint {endpoint.id} added for {endpoint.url}")
    if secret is None:
        print(f"secret (shown once, keep it to verify deliveries): {made}")
    if not settings.webhooks_allow_private:
        _warn_if_internal(endpoint.url)
    return 0


def _warn_if_internal(url: str) -> None:
    """Say at once what the workers will say at every send: a target that resolves (here, now)
    to an internal address is refused unless they allow it. The workers' check at send time
    is the one that counts (their resolver, their setting); this is only a warning."""
    from worker.webhooks.target import InternalTarget, TargetRefused, resolve  # noqa: PLC0415

    try:
        resolve(url, allow_private=False)
    except InternalTarget as exc:
        print(
            f"signq: warning: {exc} — until the workers run with it, every delivery to "
            "this endpoint is refused and dies",
            file=sys.stderr,
        )
    except TargetRefused:
        pass  # does not resolve from here: the workers' resolver decides at send time


def list_(args: argparse.Namespace, settings: Settings) -> int:
    """`signq webhooks list`: endpoints, filters and health; never a secret."""
    for endpoint in runtime(settings).endpoints.list():
        if args.json:
            print(json.dumps(endpoint.to_dict(), ensure_ascii=False))
            continue
        state = "enabled" if endpoint.enabled else f"disabled ({endpoint.disabled_reason})"
        failing = f" failing since {iso(endpoint.failing_since)}" if endpoint.failing_since else ""
        print(
            f"{endpoint.id}  {endpoint.url}  {state}{failing}  "
            f"types={','.join(endpoint.types) or 'all'}  "
            f"accounts={','.join(endpoint.accounts) or 'all'}  dead={endpoint.dead}"
        )
    return 0


def remove(args: argparse.Namespace, settings: Settings) -> int:
    """`signq webhooks remove ID`."""
    runtime(settings).endpoints.remove(args.id)
    print(f"webhook endpoint {args.id} removed")
    return 0


def toggle(args: argparse.Namespace, settings: Settings) -> int:
    """`signq webhooks enable|disable ID`."""
    enable = args.action == "enable"
    changed = runtime(settings).endpoints.set_enabled(args.id, enable)
    word = "enabled" if enable else "disabled"
    print(f"webhook endpoint {args.id} {word}" + ("" if changed else f" (it was {word})"))
    return 0


def test(args: argparse.Namespace, settings: Settings) -> int:
    """`signq webhooks test ID`: queues a webhook.test event for the endpoint."""
    delivery = runtime(settings).deliveries.test(args.id)
    print(f"webhook.test queued for {args.id} (delivery {delivery}); see `signq webhooks attempts`")
    return 0


def attempts(args: argparse.Namespace, settings: Settings) -> int:
    """`signq webhooks attempts ID`: the latest attempts, newest first; then dead deliveries."""
    rt = runtime(settings)
    for attempt in rt.deliveries.attempts(args.id, args.limit):
        if args.json:
            print(json.dumps(attempt, ensure_ascii=False))
            continue
        status = attempt.get("status") or "-"
        print(
            f"{iso(attempt.get('at'))}  {attempt['outcome']:<9}  HTTP {status}  "
            f"{attempt.get('duration_ms')} ms  attempt {attempt.get('attempt')}  "
            f"event {attempt.get('event_id')}  {attempt.get('error') or ''}".rstrip()
        )
    if not args.json:
        for dead in rt.deliveries.dead(args.id):
            print(f"dead: {dead['delivery']}  {dead.get('error', '')}")
    return 0


def replay(args: argparse.Namespace, settings: Settings) -> int:
    """`signq webhooks replay ID --since STREAM_ID|TIME`."""
    count = runtime(settings).deliveries.replay(args.id, args.since)
    print(f"{count} event(s) queued again for {args.id}")
    return 0


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """`signq webhooks` and its subcommands."""
    hooks = commands.add_parser(
        "webhooks", help="signed webhook endpoints for the events"
    ).add_subparsers(title="webhooks commands", metavar="ACTION", required=True)
    add_ = hooks.add_parser("add", help="register an endpoint (a secret is made unless given)")
    add_.add_argument("url")
    add_.add_argument("--type", action="append", default=[], help="only this event type")
    add_.add_argument("--account", action="append", default=[], help="only this account")
    add_.add_argument("--secret-file", help="a whsec_ secret to use instead of a new one")
    add_.set_defaults(handler=add)
    lst = hooks.add_parser("list", help="endpoints (never their secrets)")
    lst.add_argument("--json", action="store_true")
    lst.set_defaults(handler=list_)
    for name, text, handler in (
        ("remove", "forget an endpoint", remove),
        ("enable", "send to an endpoint again", toggle),
        ("disable", "stop sending to an endpoint", toggle),
        ("test", "send a webhook.test event", test),
    ):
        sub = hooks.add_parser(name, help=text)
        sub.add_argument("id")
        sub.set_defaults(handler=handler, action=name)
    att = hooks.add_parser("attempts", help="an endpoint's latest attempts and dead deliveries")
    att.add_argument("id")
    att.add_argument("--limit", type=int, default=50)
    att.add_argument("--json", action="store_true")
    att.set_defaults(handler=attempts)
    rep = hooks.add_parser("replay", help="send an endpoint the events since a point again")
    rep.add_argument("id")
    rep.add_argument("--since", required=True, help="a stream id or a time (ISO 8601)")
    rep.set_defaults(handler=replay)
