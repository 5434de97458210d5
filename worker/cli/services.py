"""The long-running commands: worker, scheduler, callback receiver, emulator, demo."""

from __future__ import annotations

import argparse
import os
import socket
import sys
from typing import Any

from worker.cli.accounts import unreadable_problem
from worker.cli.common import CliError, runtime
from worker.net import listen
from worker.settings import Settings


def worker(args: argparse.Namespace, settings: Settings) -> int:
    """`signq worker`: Dramatiq's worker on signq's actors, as `dramatiq worker.actors:setup`.

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
        raise CliError(unreadable_problem(problems))

    prepare_worker(settings, fresh=True)  # no worker process has started yet
    # Dramatiq reads its idle fetch timeout from this variable (the default is 1000 ms).
    os.environ["dramatiq_worker_timeout"] = str(settings.worker_timeout_ms)  # noqa: SIM112
    argv = [
        sys.executable,
        "-m",
        "dramatiq",
        "worker.actors:setup",
        "--skip-logging",
        "--processes",
        str(args.processes),
        "--threads",
        str(args.threads),
    ]
    if args.queues:
        argv += ["--queues", *args.queues]
    os.execv(sys.executable, argv)  # noqa: S606 - replaces this process with the worker


def migrate(args: argparse.Namespace, settings: Settings) -> int:
    """`signq migrate`: move Redis data written by an earlier signq into this key layout."""
    from worker import layout  # noqa: PLC0415
    from worker.keys import LAYOUT  # noqa: PLC0415
    from worker.store import Store  # noqa: PLC0415

    store = Store(settings)
    try:
        before = store.layout_version()
        if args.check:
            print(f"key layout {before or 'none (no data yet)'}; this signq uses {LAYOUT}")
            return 0 if before in (None, LAYOUT) else 1
        done = layout.migrate(store)
    finally:
        store.close()
    if before in (None, LAYOUT):
        print(f"key layout {LAYOUT} already: nothing to move")
        return 0
    moved = ", ".join(f"{kind} {n}" for kind, n in sorted(done.renamed.items())) or "none"
    print(
        f"key layout {before} -> {LAYOUT}: renamed {sum(done.renamed.values())} keys ({moved}); "
        f"{done.idempotency_keys} idempotency keys moved into their accounts' hashes"
    )
    return 0


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


def callbacks(args: argparse.Namespace, settings: Settings) -> int:
    """`signq callbacks`: serve the audit-result receiver."""
    from worker.callbacks import build_app  # noqa: PLC0415

    if settings.metrics_port > 0:
        # Never on the receiver's own port, which faces the internet.
        from prometheus_client import start_http_server  # noqa: PLC0415

        start_http_server(settings.metrics_port, addr=settings.metrics_host)
    sock = _listen(args.host, args.port)
    print(f"signq callbacks: listening at {_url(sock)}", file=sys.stderr, flush=True)
    _serve(build_app(runtime(settings)), sock, log_config=None, access_log=False)
    return 0


def emulator(args: argparse.Namespace, settings: Settings) -> int:
    """`signq emulator`: serve the JSMS API emulator in the foreground."""
    from worker.emulator import AuditRules, Emulator, EmulatorConfig  # noqa: PLC0415
    from worker.emulator.server import load_accounts  # noqa: PLC0415

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
            raise CliError(str(exc)) from None
    for item in args.account:
        app_key, sep, secret = item.partition(":")
        if not sep or not app_key or not secret:
            raise CliError(f"--account must be APP_KEY:SECRET, got {item.split(':')[0]!r}:…")
        specs.append({"app_key": app_key, "master_secret": secret})
    for spec in specs:
        emulator.add_account(
            str(spec["app_key"]),
            str(spec["master_secret"]),
            callback_url=str(spec["callback_url"]) if spec.get("callback_url") else None,
        )
    sock = _listen(args.host, args.port)
    print(
        f"signq emulator: API at {_url(sock)}v1, admin at /_emulator, {len(specs)} account(s)",
        file=sys.stderr,
        flush=True,
    )
    _serve(emulator, sock, log_level="info", lifespan="on")
    return 0


def demo(args: argparse.Namespace, settings: Settings) -> int:
    """`signq demo`: the main job end to end on embedded defaults."""
    from worker import logs  # noqa: PLC0415
    from worker.demo import DemoOptions, run  # noqa: PLC0415

    if not args.verbose:
        logs.configure("WARNING", settings.log_format)  # the demo's own view is the output

    if args.tenants < 1 or args.signatures < args.tenants:
        raise CliError("--tenants must be at least 1 and --signatures at least --tenants")
    options = DemoOptions(
        tenants=args.tenants,
        signatures=args.signatures,
        reject_every=args.reject_every,
        audit_delay=args.audit_delay,
        threads=args.threads,
        timeout=args.timeout,
        live=args.live,
        fake_redis=args.fake_redis,
        dashboard=args.dashboard,
        dashboard_port=args.dashboard_port,
    )
    return 0 if run(settings, options).ok else 1


def dashboard(args: argparse.Namespace, settings: Settings) -> int:
    """`signq dashboard`: the operator's dashboard, on 127.0.0.1 unless told otherwise."""
    import secrets  # noqa: PLC0415

    from worker.dashboard import build_app  # noqa: PLC0415

    token = settings.dashboard_token or secrets.token_urlsafe(24)
    app = build_app(runtime(settings), token, read_only=args.read_only)
    sock = _listen(args.host, args.port)
    url = _url(sock)
    # A token made here is shown once, in the URL; one from the environment is not repeated.
    where = "log in with SIGNQ_DASHBOARD_TOKEN" if settings.dashboard_token else None
    print(
        f"signq dashboard{' (read-only)' if args.read_only else ''}: "
        + (f"{url} ({where})" if where else f"{url}?token={token}"),
        flush=True,
    )
    _serve(app, sock, log_level="warning")
    return 0


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything is printed: a port in use or a host that
    does not resolve is one line naming it."""
    try:
        return listen(host, port)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise CliError(
            f"cannot listen on {host}:{port}: {reason}; choose another --host or --port"
        ) from None


def _url(sock: socket.socket) -> str:
    """Where a bound socket is reached (the real port when 0 was asked for)."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def _serve(app: Any, sock: socket.socket, **config: Any) -> None:
    """Serve an ASGI app with uvicorn on a socket bound already."""
    import uvicorn  # noqa: PLC0415

    uvicorn.Server(uvicorn.Config(app, **config)).run(sockets=[sock])
