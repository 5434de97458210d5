"""The operator's dashboard: a Starlette app over the same modules the CLI uses.

Every page and action needs the token, given once (``/login``, or ``?token=`` on the first
URL) and kept in an HttpOnly, SameSite=Strict cookie that holds a digest of it, never the
token. Actions are POSTs carrying a CSRF token derived from it; in read-only mode there are no
actions. Mount it in another ASGI app like the callback receiver:
``Mount("/signq", app=build_app(runtime, token))``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from worker.dashboard.views import (
    PAGE,
    Recent,
    Slow,
    account_rows,
    attempts_by_endpoint,
    recent_events,
)
from worker.dashboard.views import account as read_account
from worker.dashboard.views import overview as read_overview
from worker.dashboard.views import signatures as read_signatures
from worker.dashboard.views import unconfirmed as read_unconfirmed
from worker.dlq import DeadLetters
from worker.errors import SignqError
from worker.events import STREAM_ID
from worker.events import tail as stream_tail
from worker.jsms.errors import ValidationError
from worker.records import STATES
from worker.runtime import Runtime
from worker.store import text

HERE = Path(__file__).resolve().parent
COOKIE = "signq_dashboard"


def _digest(token: str, purpose: str) -> str:
    return hmac.new(token.encode(), purpose.encode(), hashlib.sha256).hexdigest()


class Guard(BaseHTTPMiddleware):
    """Refuses every request without the session cookie (but the login page and assets)."""

    def __init__(self, app: Any, session: str) -> None:
        super().__init__(app)
        self.session = session

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        """Let the request through, or answer 401 with the way to log in."""
        path = request.url.path[len(request.scope.get("root_path", "")) :]
        if path.startswith(("/login", "/static/")):
            return await call_next(request)
        token = request.query_params.get("token")
        if token is not None:
            return await _login(request, token, self.session)
        cookie = request.cookies.get(COOKIE, "")
        if not hmac.compare_digest(cookie, self.session):
            login = f"{request.scope.get('root_path', '')}/login"
            return HTMLResponse(
                f"<!doctype html><title>signq: log in</title><p>This dashboard needs its token: "
                f'<a href="{login}">log in</a>.</p>',
                status_code=401,
            )
        return await call_next(request)


async def _login(request: Request, token: str, session: str) -> Response:
    root = request.scope.get("root_path", "")
    if not hmac.compare_digest(_digest(token, "session"), session):
        return HTMLResponse(_login_page(root, "That token is not this dashboard's."), 401)
    response = RedirectResponse(f"{root}/", status_code=303)
    response.set_cookie(
        COOKIE, session, httponly=True, samesite="strict", path=f"{root}/" if root else "/"
    )
    return response


def _login_page(root: str, problem: str = "") -> str:
    note = f'<p class="problem">{problem}</p>' if problem else ""
    return (
        '<!doctype html><html><head><meta charset="utf-8"><title>signq: log in</title>'
        f'<link rel="stylesheet" href="{root}/static/dashboard.css"></head><body class="login">'
        f'<form method="post" action="{root}/login"><h1>signq</h1>{note}'
        '<label>Token <input type="password" name="token" autofocus></label>'
        '<button type="submit">Log in</button></form></body></html>'
    )


class Dashboard:
    """The pages and actions over one runtime."""

    def __init__(self, runtime: Runtime, token: str, *, read_only: bool = False) -> None:
        if len(token) < 16:
            raise SignqError("the dashboard token must be at least 16 characters")
        self.runtime = runtime
        self.read_only = read_only
        self.session, self.csrf = _digest(token, "session"), _digest(token, "csrf")
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.slow = Slow(runtime)
        self.recent = Recent(runtime)

    def page(self, request: Request, name: str, **context: Any) -> Response:
        context.update(
            request=request,
            base=request.scope.get("root_path", ""),
            csrf=self.csrf,
            read_only=self.read_only,
            states=STATES,
        )
        return self.templates.TemplateResponse(request, name, context)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args)

    async def act(
        self, request: Request, action: Callable[[dict[str, str]], str], back: str
    ) -> Response:
        """A POSTed action: CSRF checked, refused in read-only mode, the CLI's checks apply."""
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not hmac.compare_digest(form.get("csrf", ""), self.csrf):
            return HTMLResponse("refused: the form's CSRF token is missing or wrong", 403)
        if self.read_only:
            return HTMLResponse("refused: this dashboard is read-only", 403)
        try:
            message = await self.run(action, form)
        except (SignqError, ValidationError, ValueError) as exc:
            message = f"refused: {exc}"
        root = request.scope.get("root_path", "")
        return RedirectResponse(f"{root}{back}?flash={quote(message)}", status_code=303)

    async def login_form(self, request: Request) -> Response:
        if request.method == "POST":
            form = await request.form()
            return await _login(request, str(form.get("token", "")), self.session)
        return HTMLResponse(_login_page(request.scope.get("root_path", "")))

    def _overview(self) -> dict[str, Any]:
        return {**read_overview(self.runtime), **self.recent.get()}

    async def overview(self, request: Request) -> Response:
        return self.page(request, "overview.html", live=await self.run(self._overview))

    async def overview_json(self, request: Request) -> Response:
        return JSONResponse(await self.run(self._overview))

    async def status_json(self, request: Request) -> Response:
        return JSONResponse(await self.run(self.slow.get))

    async def accounts(self, request: Request) -> Response:
        q = request.query_params.get("q", "").strip()
        after = request.query_params.get("after", "")
        rows = await self.run(
            lambda: account_rows(
                self.runtime, self.runtime.accounts.page(after=after, prefix=q, count=PAGE)
            )
        )
        total = await self.run(self.runtime.accounts.count)
        return self.page(request, "accounts.html", rows=rows, q=q, total=total, page_size=PAGE)

    async def account(self, request: Request) -> Response:
        name = request.path_params["name"]
        try:
            data = await self.run(read_account, self.runtime, name)
        except SignqError as exc:
            return HTMLResponse(str(exc), 404)
        return self.page(request, "account.html", **data)

    async def account_action(self, request: Request) -> Response:
        name, verb = request.path_params["name"], request.path_params["verb"]

        def do(_form: dict[str, str]) -> str:
            if verb == "pause":
                changed = self.runtime.accounts.pause(name, "paused from the dashboard")
                return f"account {name} " + ("paused" if changed else "was already paused")
            if verb == "resume":
                queued = self.runtime.accounts.resume(name)
                self.runtime.dispatch.jobs(queued)
                return f"account {name} resumed; {len(queued)} waiting job(s) re-queued"
            raise ValueError(f"no action {verb!r}")

        return await self.act(request, do, f"/accounts/{quote(name)}")

    async def jobs(self, request: Request) -> Response:
        state = request.query_params.get("state") or None
        account_name = request.query_params.get("account") or None
        op = request.query_params.get("op") or None
        offset = int(request.query_params.get("offset") or 0)
        try:
            rows = await self.run(
                lambda: self.runtime.jobs.find(
                    state=state if state or account_name else "queued",
                    account=account_name,
                    limit=PAGE,
                    offset=offset,
                )
            )
        except SignqError as exc:
            return HTMLResponse(str(exc), 400)
        if op:
            rows = [r for r in rows if r.op == op]
        return self.page(
            request,
            "jobs.html",
            rows=rows,
            state=state or ("" if account_name else "queued"),
            account=account_name or "",
            op=op or "",
            offset=offset,
            page_size=PAGE,
        )

    async def job(self, request: Request) -> Response:
        job_id = request.path_params["job_id"]
        record = await self.run(self.runtime.jobs.get, job_id)
        if record is None:
            return HTMLResponse(f"no job {job_id}", 404)
        events = await self.run(lambda: recent_events(self.runtime, job_id=job_id, limit=100))
        return self.page(request, "job.html", job=record, record=record.to_dict(), events=events)

    async def job_action(self, request: Request) -> Response:
        job_id, verb = request.path_params["job_id"], request.path_params["verb"]

        def do(form: dict[str, str]) -> str:
            if verb == "cancel":
                self.runtime.jobs.cancel(job_id)
                return f"job {job_id} cancelled"
            if verb == "abandon":
                self.runtime.jobs.abandon(job_id)
                return f"job {job_id} abandoned"
            if verb == "retry":
                return f"job {job_id}: {self.runtime.jobs.retry(job_id)}"
            if verb == "confirm":
                raw = form.get("sign_id", "").strip()
                if not raw.isdigit():
                    raise ValueError(f"sign id must be a positive integer, got {raw!r}")
                self.runtime.tracker.confirm_checked(job_id, int(raw))
                return f"job {job_id} confirmed as sign id {raw}"
            raise ValueError(f"no action {verb!r}")

        return await self.act(request, do, f"/jobs/{job_id}")

    async def signatures(self, request: Request) -> Response:
        offset = int(request.query_params.get("offset") or 0)
        rows = await self.run(read_signatures, self.runtime, offset)
        return self.page(request, "signatures.html", rows=rows, offset=offset, page_size=PAGE)

    async def events_page(self, request: Request) -> Response:
        kind = request.query_params.get("type") or None
        account_name = request.query_params.get("account") or None
        rows = await self.run(
            lambda: recent_events(self.runtime, account=account_name, kind=kind, limit=50)
        )
        return self.page(
            request, "events.html", rows=rows, kind=kind or "", account=account_name or ""
        )

    async def events_stream(self, request: Request) -> Response:
        kind = request.query_params.get("type") or None
        account_name = request.query_params.get("account") or None
        stream = self.runtime.store.keys.events()

        # A browser that reconnects sends the id of the last event it had (Last-Event-ID): it
        # gets what came after it. A new one starts at the stream's end, resolved once (a "$"
        # re-read after each timed-out read would drop what came between two reads).
        resume = request.headers.get("last-event-id", "")
        if STREAM_ID.fullmatch(resume):
            start = resume
        else:
            start = await self.run(stream_tail, self.runtime.store.redis, stream)

        async def feed() -> AsyncIterator[str]:
            last = start
            yield ": connected\n\n"
            for _ in range(100_000):  # bounded: a browser reconnects by itself
                if await request.is_disconnected():
                    return
                reply = await self.run(self._read_events, stream, last)
                if not reply:
                    yield ": keep-alive\n\n"
                    continue
                for entry_id, raw in reply[0][1]:
                    last = text(entry_id)
                    try:
                        event = json.loads(text(raw.get("event")))
                    except ValueError:
                        continue
                    if kind and event.get("type") != kind:
                        continue
                    if account_name and event.get("account") != account_name:
                        continue
                    body = json.dumps({"stream_id": last, **event}, ensure_ascii=False)
                    yield f"id: {last}\ndata: {body}\n\n"
                await asyncio.sleep(0)

        return StreamingResponse(
            feed(),
            media_type="text/event-stream",
            headers={"cache-control": "no-store", "x-accel-buffering": "no"},
        )

    async def dlq(self, request: Request) -> Response:
        letters = await self.run(DeadLetters(self.runtime).all)
        return self.page(request, "dlq.html", letters=letters)

    async def dlq_action(self, request: Request) -> Response:
        verb = request.path_params["verb"]

        def do(form: dict[str, str]) -> str:
            letters = DeadLetters(self.runtime)
            if verb == "retry":
                ids = form.get("ids", "").replace(",", " ").split()
                retried = letters.retry(ids or None)
                return f"{len(retried)} dead letter(s) sent again"
            if verb == "purge":
                return f"{letters.purge()} dead letter(s) purged"
            raise ValueError(f"no action {verb!r}")

        return await self.act(request, do, "/dlq")

    async def unconfirmed(self, request: Request) -> Response:
        offset = int(request.query_params.get("offset") or 0)
        rows = await self.run(read_unconfirmed, self.runtime, offset)
        return self.page(request, "unconfirmed.html", rows=rows, offset=offset, page_size=PAGE)

    async def webhooks(self, request: Request) -> Response:
        rows = await self.run(attempts_by_endpoint, self.runtime)
        return self.page(request, "webhooks.html", rows=rows)

    def _read_events(self, stream: str, last: str) -> Any:
        return self.runtime.store.redis.xread({stream: last}, count=100, block=1000)

    def routes(self) -> list[Any]:
        """Every page and action."""
        return [
            Route("/login", self.login_form, methods=["GET", "POST"]),
            Route("/", self.overview),
            Route("/api/overview", self.overview_json),
            Route("/api/status", self.status_json),
            Route("/accounts", self.accounts),
            Route("/accounts/{name}", self.account),
            Route("/accounts/{name}/{verb}", self.account_action, methods=["POST"]),
            Route("/jobs", self.jobs),
            Route("/jobs/{job_id}", self.job),
            Route("/jobs/{job_id}/{verb}", self.job_action, methods=["POST"]),
            Route("/signatures", self.signatures),
            Route("/events", self.events_page),
            Route("/events/stream", self.events_stream),
            Route("/dlq", self.dlq),
            Route("/dlq/{verb}", self.dlq_action, methods=["POST"]),
            Route("/unconfirmed", self.unconfirmed),
            Route("/webhooks", self.webhooks),
            Mount("/static", app=StaticFiles(directory=str(HERE / "static")), name="static"),
        ]


@contextmanager
def serving(
    runtime: Runtime, *, port: int = 0, token: str | None = None, read_only: bool = False
) -> Iterator[str]:
    """The dashboard served on loopback for the block (a fresh token unless given); yields the
    URL to open, the token in it (the first visit trades it for the cookie)."""
    from worker.emulator.server import ThreadedServer  # noqa: PLC0415 - a loopback server

    token = token or secrets.token_urlsafe(24)
    server = ThreadedServer(build_app(runtime, token, read_only=read_only), port=port).start()
    try:
        yield f"{server.url}/?token={token}"
    finally:
        server.stop()


def build_app(runtime: Runtime, token: str, *, read_only: bool = False) -> Starlette:
    """The dashboard for one runtime, guarded by ``token`` (a Starlette app to serve or mount)."""
    dashboard = Dashboard(runtime, token, read_only=read_only)
    return Starlette(
        routes=dashboard.routes(), middleware=[Middleware(Guard, session=dashboard.session)]
    )
