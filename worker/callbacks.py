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

import structlog
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from worker.accounts import AccountError, SecretKeyError
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
        form = {k: v for k, v in (await request.form()).items() if isinstance(v, str)}
        status, body = await run_in_threadpool(self.apply, account, form)
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
            return 404, {"result": "unknown_account"}
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
    """The receiver as an ASGI app (``/callbacks/{account}`` and ``/healthz``)."""
    receiver = Receiver(runtime)

    async def healthz(_request: Request) -> Response:
        return JSONResponse({"ok": True, "results": dict(receiver.results)})

    async def exposition(_request: Request) -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest  # noqa: PLC0415

        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    app = Starlette(
        routes=[
            Route("/callbacks/{account}", receiver.handle, methods=["GET", "POST"]),
            Route("/healthz", healthz),
            Route("/metrics", exposition),
        ]
    )
    app.state.receiver = receiver
    return app
