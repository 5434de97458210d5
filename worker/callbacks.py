"""The audit-result callback receiver: the API owner's push protocol, on ``/callbacks/{account}``.

GET echoes ``echostr`` (the URL check). POST verifies the SHA-1 signature with the account's
credentials, refuses stale timestamps and replayed nonces, and applies an ``SMS_SIGN`` result
through the tracker's compare-and-set path, so the rejection reason reaches the event. Other
push types are acknowledged and ignored. A result for a sign id signq does not track is kept
for the account and settles the unconfirmed create whose sign it carries, now or once that
create is known to be unconfirmed. Polling stays the source of truth:
with callbacks a change is seen in about a second, without them the poller still sees it.

``build_app(runtime)`` returns a Starlette app to serve alone (``signq callbacks``) or to mount
inside another ASGI app.
"""

from __future__ import annotations

from collections import Counter
from typing import Any
from urllib.parse import parse_qsl

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from worker.errors import AccountError, SecretKeyError
from worker.jsms.callback import (
    SMS_SIGN,
    BadSignature,
    CallbackError,
    CallbackMessage,
    StaleCallback,
    sign_audit_result,
    verify_callback,
)
from worker.metrics import metrics
from worker.runtime import Runtime
from worker.store import fields

log = structlog.get_logger(__name__)
# A real push is a few hundred bytes in five fields.
MAX_BODY_BYTES = 16 * 1024
MAX_FIELDS = 20


class Receiver:
    """Verifies and applies pushes; counts what happened to them."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.results: Counter[str] = Counter()

    async def handle(self, request: Request) -> Response:
        """GET: the URL check. POST: a push."""
        account = request.path_params["account"]
        if request.method == "GET":
            echostr = request.query_params.get("echostr")
            if not echostr:
                return PlainTextResponse("echostr is required", status_code=400)
            return PlainTextResponse(echostr)
        form = await _bounded_form(request)
        if isinstance(form, Response):
            self.results["too_large"] += 1
            return form
        try:
            status, body = await run_in_threadpool(self.apply, account, form)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            # The API pushes again later; nothing is lost by answering "not now".
            log.warning("redis_unavailable", error=str(exc))
            status, body = 503, {"result": "unavailable"}
        self.results[body.get("result", "error")] += 1
        metrics().callbacks.labels(body.get("result", "error")).inc()
        return JSONResponse(body, status_code=status)

    def apply(self, account: str, form: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Verify and apply one push; returns the HTTP status and body to answer with."""
        checked = self._verify(account, form)
        if not isinstance(checked, CallbackMessage):
            return checked
        if checked.type != SMS_SIGN:
            return 200, {"result": "ignored", "type": checked.type}
        try:
            result = sign_audit_result(checked)
        except CallbackError as exc:
            return 400, {"result": "malformed", "error": exc.message}
        tracker = self.runtime.tracker
        status = int(result.status)
        what = tracker.observe_result(account, result.sign_id, status, reason=result.refuse_reason)
        if what == "untracked":
            adopted = tracker.adopt(account, result.sign_id, status, reason=result.refuse_reason)
            what = "adopted" if adopted else "kept"
        log.info("callback_applied", account=account, sign_id=result.sign_id, what=what)
        return 200, {"result": what}

    def _verify(
        self, account: str, form: dict[str, str]
    ) -> CallbackMessage | tuple[int, dict[str, Any]]:
        """The verified push, or the answer refusing it."""
        rt = self.runtime
        stored = fields(rt.store.redis.hgetall(rt.store.keys.account(account)))
        if not stored:
            # Answered as a forgery is: a different answer would tell which tenants exist.
            log.warning("callback_for_unknown_account", account=account[:64])
            return 401, {"result": "bad_signature"}
        max_age = rt.settings.callback_max_age_seconds
        try:
            creds = rt.accounts.credentials(account, stored["app_key"], stored["secret"])
            message = verify_callback(form, creds, max_age_seconds=max_age)
        except SecretKeyError:
            # Ours to fix, not the sender's: the API retries a push answered with a 5xx.
            log.error("callback_secret_unreadable", account=account)
            return 503, {"result": "unavailable"}
        except (BadSignature, AccountError):
            log.warning("callback_forged", account=account)
            return 401, {"result": "bad_signature"}
        except CallbackError as exc:
            kind = "stale" if isinstance(exc, StaleCallback) else "malformed"
            return 400, {"result": kind, "error": exc.message}
        # A nonce is kept twice as long as a timestamp stays fresh: a replay is always caught.
        nonce_key = rt.store.keys.nonce(account, message.nonce)
        if not rt.store.redis.set(nonce_key, 1, nx=True, px=int(max_age * 2000)):
            log.warning("callback_replayed", account=account, nonce=message.nonce)
            return 409, {"result": "replayed"}
        return message


def build_app(runtime: Runtime) -> Starlette:
    """The receiver as an ASGI app (``/callbacks/{account}`` and ``/healthz``); it faces the
    internet, so its metrics are served elsewhere (``SIGNQ_METRICS_PORT``)."""
    receiver = Receiver(runtime)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"ok": True, "results": dict(receiver.results)})

    app = Starlette(
        routes=[
            Route("/callbacks/{account}", receiver.handle, methods=["GET", "POST"]),
            Route("/healthz", healthz),
        ]
    )
    app.state.receiver = receiver
    return app


async def _bounded_form(request: Request) -> dict[str, str] | Response:
    """The push's form fields, read only up to ``MAX_BODY_BYTES`` and ``MAX_FIELDS``: nobody
    is authenticated yet, so nobody may make the receiver hold more than that."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return _too_large()
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            return _too_large()
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        try:
            parsed = await Request(request.scope, replay).form(max_files=0, max_fields=MAX_FIELDS)
        except HTTPException:
            return JSONResponse({"result": "malformed"}, status_code=400)
        return {k: v for k, v in parsed.items() if isinstance(v, str)}
    try:
        pairs = parse_qsl(body.decode("utf-8"), max_num_fields=MAX_FIELDS)
    except (UnicodeDecodeError, ValueError):
        return JSONResponse({"result": "malformed"}, status_code=400)
    return dict(pairs)


def _too_large() -> Response:
    return JSONResponse({"result": "too_large"}, status_code=413)
