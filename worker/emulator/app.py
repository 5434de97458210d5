"""The emulator's HTTP face: the JSMS signature endpoints and audit callbacks (the admin API is
``worker.emulator.admin``).

API paths behave like the real service (``/v1/sign``, ``/v1/sign/{sign_id}``); everything for
tests and operators lives under ``/_emulator/`` and is never reachable through the API paths.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import json
import logging
import re
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from worker.emulator.admin import AdminRoutes
from worker.emulator.config import EmulatorConfig
from worker.emulator.faults import FaultRule, Faults
from worker.emulator.world import Account, ApiFault, Sig, SignFields, World
from worker.jsms.callback import SMS_SIGN, callback_signature
from worker.jsms.credentials import Credentials
from worker.jsms.errors import ValidationError
from worker.jsms.models import (
    MAX_IMAGES,
    image_kind,
    validate_remark,
    validate_sign,
    validate_type,
)

log = logging.getLogger("signq.emulator")
API_ROOT = "/v1"
_SIGN_PATH = re.compile(r"^/v1/sign/?$")
_SIGN_ID_PATH = re.compile(r"^/v1/sign/([^/]+)/?$")
# The API owner's schedule for a failed push: at most three retries, after 3 min, 1 h and 12 h.
CALLBACK_RETRY_DELAYS = (180.0, 3600.0, 43200.0)
_DROP_LOG = "ASGI callable returned without completing response."


class Emulator(AdminRoutes):
    """World state, faults and callback delivery behind one Starlette app."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        self.world = World(self.config.rules)
        self.faults = Faults(self.config.fault_seed)
        self.callbacks: Counter[str] = Counter()
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None
        self.app = Starlette(
            routes=[
                *self.admin_routes(),
                Route("/{path:path}", self._api, methods=list(_METHODS)),
            ],
            lifespan=self._lifespan,
        )
        logging.getLogger("uvicorn.error").addFilter(_quiet_deliberate_drops)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)

    def add_account(
        self,
        app_key: str,
        master_secret: str,
        *,
        sms_enabled: bool = True,
        callback_url: str | None = None,
        audit_delay: float | None = None,
    ) -> Account:
        """Register an account (start-up flags and files use this; tests use the admin API)."""
        return self.world.add_account(
            Account(
                app_key=app_key,
                master_secret=master_secret,
                sms_enabled=sms_enabled,
                callback_url=callback_url,
                audit_delay=audit_delay,
            )
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Starlette) -> AsyncIterator[None]:
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0))
        clock = asyncio.create_task(self._audit_clock())
        try:
            yield
        finally:
            clock.cancel()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(clock, *self._tasks, return_exceptions=True)
            await self._http.aclose()

    async def _audit_clock(self) -> None:
        while True:
            self._advance()
            await asyncio.sleep(self.config.tick_seconds)

    def _advance(self) -> None:
        for sig in self.world.advance():
            self._announce(sig)

    def _announce(self, sig: Sig) -> None:
        account = self.world.accounts.get(sig.app_key)
        if account is None or not account.callback_url or self._http is None:
            return
        data = {"signId": sig.sign_id, "status": int(sig.status), "refuseReason": sig.refuse_reason}
        task = asyncio.create_task(self._deliver(account, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, account: Account, data: dict[str, Any]) -> None:
        """POST one SMS_SIGN push, retried on the API owner's schedule (scaled)."""
        assert self._http is not None  # noqa: S101 - set by the lifespan before any request
        creds = Credentials(account.app_key, account.master_secret)
        delays = (0.0, *CALLBACK_RETRY_DELAYS)
        for attempt, delay in enumerate(delays):
            await asyncio.sleep(delay * self.config.callback_time_scale)
            nonce = str(secrets.randbelow(2**63))
            timestamp = str(int(time.time() * 1000))
            form = {
                "nonce": nonce,
                "timestamp": timestamp,
                "type": SMS_SIGN,
                "data": json.dumps(data, ensure_ascii=False),
                "signature": callback_signature(creds, nonce, timestamp),
            }
            url = account.callback_url
            if url is None:
                return
            try:
                response = await self._http.post(url, data=form)
                if response.status_code == 200:
                    self.callbacks["delivered"] += 1
                    return
            except httpx.HTTPError as exc:
                log.info("callback attempt %d to %s failed: %s", attempt + 1, url, exc)
            self.callbacks["failed_attempts"] += 1
        self.callbacks["abandoned"] += 1

    async def _api(self, request: Request) -> Response:
        app_key, secret = _basic_auth(request.headers.get("authorization"))
        operation = "unknown"
        outcome = "50000"
        try:
            operation, sign_id = _route(request.url.path, request.method)
            self._advance()
            decision = self.faults.decide(app_key, operation)
            if decision.delay:
                await asyncio.sleep(decision.delay)
            fault = decision.fault
            if fault is not None and fault.kind == "stall":
                await asyncio.sleep(fault.seconds)
                outcome = "fault_stall"
                return _DroppedResponse()
            if fault is not None and not fault.after and fault.kind in ("error", "drop"):
                outcome = f"fault_{fault.kind}"
                return _fault_response(fault)
            if fault is not None and fault.kind in ("rate_limit", "html"):
                outcome = "http429" if fault.kind == "rate_limit" else "http502"
                return _fault_response(fault)
            account = self.world.authenticate(app_key, secret)
            response = await self._operate(request, account, operation, sign_id)
            if fault is not None and fault.kind == "slow":
                await asyncio.sleep(fault.seconds)
            elif fault is not None:
                outcome = f"fault_{fault.kind}_after"
                return _fault_response(fault)
            return response
        except ApiFault as fault:
            outcome = str(fault.code)
            return JSONResponse(fault.body(), status_code=fault.http_status)
        finally:
            self.world.requests[(app_key or "", operation, outcome)] += 1

    async def _operate(
        self, request: Request, account: Account, operation: str, sign_id: int | None
    ) -> Response:
        if operation == "create":
            sig = self.world.create(account, await self._sign_fields(request))
            return JSONResponse({"sign_id": sig.sign_id})
        assert sign_id is not None  # noqa: S101 - _route gives every other operation an id
        if operation == "modify":
            fields = await self._sign_fields(request)
            sig = self.world.modify(account, sign_id, fields)
            return JSONResponse({"sign_id": sig.sign_id})
        if operation == "query":
            return JSONResponse(self.world.query(account, sign_id))
        self.world.delete(account, sign_id)
        return Response(b"", status_code=200, media_type="application/json")

    async def _sign_fields(self, request: Request) -> SignFields:
        """Parse and check a create/modify body the way the API does."""
        body = await request.body()
        if not body:
            raise ApiFault(50003)
        # Media types are case-insensitive (RFC 9110): Multipart/Form-Data is multipart too.
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise ApiFault(50017)
        try:
            async with request.form(max_files=MAX_IMAGES * 2, max_fields=16) as form:
                sign = _text(form.get("sign"))
                raw_type = _text(form.get("type"))
                raw_remark = _text(form.get("remark"))
                uploads = [form.get(f"image{i}") for i in range(MAX_IMAGES)]
                uploads += form.getlist("images")
                # An empty slot is no image (the SDKs send one); text where a file belongs is.
                if any(isinstance(u, str) and u for u in uploads):
                    raise ApiFault(50101, "invalid image: an image must be sent as a file")
                images = [await _read_upload(u) for u in uploads]
        except MultiPartException as exc:
            raise ApiFault(50007, f"invalid body: {exc.message}") from None
        except HTTPException as exc:
            # Starlette turns the parser's complaint (no boundary, an unnamed part) into an
            # HTTP 400 of its own; the API answers its JSON error.
            raise ApiFault(50007, f"invalid body: {exc.detail}") from None
        if sign is None:
            raise ApiFault(50007, "invalid body: sign is required")
        try:
            validate_sign(sign)
        except ValidationError as exc:
            raise ApiFault(50104, f"invalid signature: {exc.message}") from None
        try:
            sign_type = validate_type(raw_type)
            remark = validate_remark(raw_remark)
        except ValidationError as exc:
            raise ApiFault(50007, f"invalid body: {exc.message}") from None
        present = [data for data in images if data]
        if len(present) > MAX_IMAGES:
            raise ApiFault(50101, f"invalid image: at most {MAX_IMAGES} images")
        for data in present:
            if image_kind(data) is None or len(data) > self.config.max_image_bytes:
                raise ApiFault(50101)
        hashes = tuple(hashlib.sha256(data).hexdigest() for data in present)
        return SignFields(sign=sign, type=sign_type, remark=remark, image_hashes=hashes)


_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def _route(path: str, method: str) -> tuple[str, int | None]:
    """Operation and sign id for an API path, or the API's 50016/50018/50102."""
    if _SIGN_PATH.match(path):
        if method != "POST":
            raise ApiFault(50018)
        return "create", None
    match = _SIGN_ID_PATH.match(path)
    if not match:
        raise ApiFault(50016)
    operation = {"POST": "modify", "GET": "query", "DELETE": "delete"}.get(method)
    if operation is None:
        raise ApiFault(50018)
    raw = match.group(1)
    if not raw.isdigit() or int(raw) <= 0:
        raise ApiFault(50102)
    return operation, int(raw)


def _basic_auth(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return "", None
    app_key, sep, secret = decoded.partition(":")
    return app_key, secret if sep else None


def _text(value: str | UploadFile | None) -> str | None:
    if value is None or isinstance(value, UploadFile):
        return None
    return value or None


async def _read_upload(value: str | UploadFile | None) -> bytes:
    if isinstance(value, UploadFile):
        return await value.read()
    return b""


def _fault_response(fault: FaultRule) -> Response:
    if fault.kind == "drop":
        return _DroppedResponse()
    if fault.kind == "rate_limit":
        return JSONResponse(
            {"error": {"code": 50019, "message": "too many requests"}},
            status_code=429,
            headers={"Retry-After": str(round(fault.seconds))},
        )
    if fault.kind == "html":
        return Response(
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            status_code=502,
            media_type="text/html",
        )
    return JSONResponse({"error": {"code": 50019, "message": "server error"}}, status_code=500)


class _DroppedResponse(Response):
    """Starts a response, sends part of it, then abandons the connection."""

    def __init__(self) -> None:
        super().__init__()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"64")],
            }
        )
        await send({"type": "http.response.body", "body": b'{"sign', "more_body": True})


def _quiet_deliberate_drops(record: logging.LogRecord) -> bool:
    return record.getMessage() != _DROP_LOG
