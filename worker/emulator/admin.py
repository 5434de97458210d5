"""The emulator's admin API under ``/_emulator/``: accounts, faults, audit rules, forced results
and counters, for tests and operators; never reachable through the API's own paths."""

from __future__ import annotations

import secrets
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import httpx
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worker.emulator.config import EmulatorConfig
from worker.emulator.faults import FaultRule, Faults, FaultSpecError
from worker.emulator.world import Account, Sig, World
from worker.jsms.models import Status


class AdminRoutes:
    """The admin endpoints, mixed into the emulator (which owns the world they look at)."""

    config: EmulatorConfig
    world: World
    faults: Faults
    callbacks: Counter[str]
    _http: httpx.AsyncClient | None

    # The emulator's own, used here: registering an account, pushing a forced result.
    add_account: Callable[..., Account]
    _announce: Callable[[Sig], None]

    def admin_routes(self) -> list[Route]:
        """Every admin route."""
        return [
            Route("/_emulator/health", self._health),
            Route("/_emulator/accounts", self._accounts, methods=["GET", "POST"]),
            Route("/_emulator/accounts/{app_key}/signatures", self._account_signatures),
            Route("/_emulator/stats", self._stats),
            Route("/_emulator/faults", self._faults, methods=["GET", "POST"]),
            Route("/_emulator/rules", self._rules, methods=["GET", "PUT"]),
            Route(
                "/_emulator/signatures/{sign_id:int}",
                self._signature,
                methods=["GET", "POST"],
            ),
        ]

    def _authorized(self, request: Request) -> bool:
        token = self.config.admin_token
        return token is None or secrets.compare_digest(
            request.headers.get("x-emulator-token", ""), token
        )

    async def _health(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def _accounts(self, request: Request) -> Response:
        if not self._authorized(request):
            return _admin_error(403, "admin token required")
        if request.method == "GET":
            return JSONResponse({"accounts": sorted(self.world.accounts)})
        payload = await _json_body(request)
        specs = payload if isinstance(payload, list) else [payload]
        added = []
        for spec in specs:
            if (
                not isinstance(spec, dict)
                or not spec.get("app_key")
                or not spec.get("master_secret")
            ):
                return _admin_error(400, "each account needs app_key and master_secret")
            callback_url = spec.get("callback_url")
            if callback_url and spec.get("verify_callback", True):
                problem = await self._verify_callback_url(str(callback_url))
                if problem:
                    return _admin_error(400, problem)
            account = self.add_account(
                str(spec["app_key"]),
                str(spec["master_secret"]),
                sms_enabled=bool(spec.get("sms_enabled", True)),
                callback_url=str(callback_url) if callback_url else None,
                audit_delay=None if spec.get("audit_delay") is None else float(spec["audit_delay"]),
            )
            added.append(account.app_key)
        return JSONResponse({"added": added})

    async def _account_signatures(self, request: Request) -> Response:
        if not self._authorized(request):
            return _admin_error(403, "admin token required")
        ids = self.world.by_account.get(request.path_params["app_key"], set())
        return JSONResponse({"sign_ids": sorted(ids)})

    async def _verify_callback_url(self, url: str) -> str | None:
        """The API owner's check: GET with an 8-character echostr that must come back as is."""
        assert self._http is not None  # noqa: S101 - set by the lifespan
        echostr = secrets.token_hex(4)
        try:
            response = await self._http.get(url, params={"echostr": echostr})
        except httpx.HTTPError as exc:
            return f"callback URL unreachable: {exc}"
        if response.status_code != 200 or response.text != echostr:
            return f"callback URL did not echo echostr (HTTP {response.status_code})"
        return None

    async def _stats(self, request: Request) -> Response:
        if not self._authorized(request):
            return _admin_error(403, "admin token required")
        stats = self.world.stats(request.query_params.get("app_key"))
        stats["callbacks"] = dict(self.callbacks)
        return JSONResponse(stats)

    async def _faults(self, request: Request) -> Response:
        if not self._authorized(request):
            return _admin_error(403, "admin token required")
        if request.method == "GET":
            plans = {k: [r.to_dict() for r in v] for k, v in self.faults.plans.items()}
            return JSONResponse({"plans": plans})
        payload = await _json_body(request)
        if not isinstance(payload, dict) or not isinstance(payload.get("rules", []), list):
            return _admin_error(400, "body must be {'app_key': ..., 'rules': [...]}")
        try:
            rules = [FaultRule.from_dict(spec) for spec in payload.get("rules", [])]
        except FaultSpecError as exc:
            return _admin_error(400, str(exc))
        self.faults.set_plan(str(payload.get("app_key", "*")), rules)
        return JSONResponse({"rules": [r.to_dict() for r in rules]})

    async def _rules(self, request: Request) -> Response:
        if not self._authorized(request):
            return _admin_error(403, "admin token required")
        if request.method == "PUT":
            payload = await _json_body(request)
            try:
                self.world.rules = replace(self.world.rules, **payload)
            except TypeError as exc:
                return _admin_error(400, f"unknown rule: {exc}")
        rules = self.world.rules
        return JSONResponse(
            {
                "audit_delay": rules.audit_delay,
                "approval_rate": rules.approval_rate,
                "in_use_rate": rules.in_use_rate,
                "seed": rules.seed,
                "default_signatures": rules.default_signatures,
            }
        )

    async def _signature(self, request: Request) -> Response:
        """Admin view of a signature; POST forces its audit result or use status."""
        if not self._authorized(request):
            return _admin_error(403, "admin token required")
        sig = self.world.signatures.get(int(request.path_params["sign_id"]))
        if sig is None:
            return _admin_error(404, "no such signature")
        if request.method == "POST":
            payload = await _json_body(request)
            status = Status(int(payload.get("status", sig.status)))
            use_status = payload.get("use_status")
            self.world.resolve(
                sig,
                status,
                use_status=None if use_status is None else int(use_status),
                reason=payload.get("reason"),
            )
            if "status" in payload and status is not Status.PENDING:
                self._announce(sig)
        account = self.world.accounts[sig.app_key]
        return JSONResponse(
            {
                "sign_id": sig.sign_id,
                "app_key": sig.app_key,
                "sign": sig.sign,
                "type": sig.type,
                "remark": sig.remark,
                "images": len(sig.image_hashes),
                "status": int(sig.status),
                "use_status": sig.use_status,
                "is_default": account.default_sign_id == sig.sign_id,
                "refuse_reason": sig.refuse_reason,
                "resolved_at": sig.resolved_wall,
            }
        )


async def _json_body(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return {}


def _admin_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)
