"""Running the emulator: in the foreground (``signq emulator``) or on a background thread."""

from __future__ import annotations

import csv
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, cast

import httpx
import uvicorn
from starlette.types import ASGIApp

from worker.emulator.app import API_ROOT, Emulator
from worker.files import read_text
from worker.net import free_port

if TYPE_CHECKING:
    from uvicorn._types import ASGIApplication


class ThreadedServer:
    """An ASGI app served over real HTTP on loopback from a daemon thread (tests, demo, bench)."""

    def __init__(
        self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.scheme = "https" if uvicorn_options.get("ssl_certfile") else "http"
        config = uvicorn.Config(
            # Starlette's and uvicorn's ASGI type aliases describe the same protocol.
            cast("ASGIApplication", app),
            host=host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="on",
            timeout_keep_alive=30,
            **uvicorn_options,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="asgi-server", daemon=True)

    @property
    def url(self) -> str:
        """Root URL of the server."""
        return f"{self.scheme}://{self.host}:{self.port}"

    def start(self, timeout: float = 10.0) -> Self:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Stop serving and wait for the thread; a request still held open (a slow fault, a
        stalled client) is cut after a short grace instead of being waited for."""
        self._server.should_exit = True
        self._thread.join(timeout=1)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class EmulatorServer(ThreadedServer):
    """The emulator on a background thread."""

    def __init__(
        self, emulator: Emulator, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any
    ) -> None:
        super().__init__(emulator, host, port, **uvicorn_options)
        self.emulator = emulator

    @property
    def api_url(self) -> str:
        """The base URL a JSMS client is given."""
        return self.url + API_ROOT


class EmulatorAdmin:
    """A small client for the ``/_emulator`` admin API."""

    def __init__(self, url: str, token: str | None = None) -> None:
        headers = {"X-Emulator-Token": token} if token else {}
        self._http = httpx.Client(base_url=url.rstrip("/") + "/_emulator", headers=headers)

    def add_account(self, app_key: str, master_secret: str, **options: Any) -> None:
        """Register an account (options: sms_enabled, callback_url, audit_delay, ...)."""
        self._ok(
            self._http.post(
                "/accounts", json={"app_key": app_key, "master_secret": master_secret, **options}
            )
        )

    def add_accounts(self, specs: list[dict[str, Any]]) -> None:
        """Register many accounts in one request."""
        self._ok(self._http.post("/accounts", json=specs))

    def set_faults(self, rules: list[dict[str, Any]], app_key: str = "*") -> None:
        """Replace the fault plan of one account (or the global one)."""
        self._ok(self._http.post("/faults", json={"app_key": app_key, "rules": rules}))

    def set_rules(self, **rules: Any) -> dict[str, Any]:
        """Change the audit rules (audit_delay, approval_rate, in_use_rate, ...)."""
        return self._ok(self._http.put("/rules", json=rules))

    def stats(self, app_key: str | None = None) -> dict[str, Any]:
        """Request counters, for one account or all."""
        params = {"app_key": app_key} if app_key else {}
        return self._ok(self._http.get("/stats", params=params))

    def signatures(self, app_key: str) -> list[int]:
        """The sign ids an account holds at the emulator."""
        ids: list[int] = self._ok(self._http.get(f"/accounts/{app_key}/signatures"))["sign_ids"]
        return ids

    def signature(self, sign_id: int) -> dict[str, Any]:
        """The emulator's full record of a signature."""
        return self._ok(self._http.get(f"/signatures/{sign_id}"))

    def force(self, sign_id: int, **fields: Any) -> dict[str, Any]:
        """Force a signature's status, use_status or rejection reason."""
        return self._ok(self._http.post(f"/signatures/{sign_id}", json=fields))

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    @staticmethod
    def _ok(response: httpx.Response) -> dict[str, Any]:
        if response.status_code != 200:
            raise RuntimeError(f"emulator admin {response.status_code}: {response.text}")
        body: dict[str, Any] = response.json()
        return body


def load_accounts(path: Path) -> list[dict[str, Any]]:
    """Accounts from a JSON list or a CSV with app_key, master_secret[, callback_url]."""
    text = read_text(path)
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, list):
            raise ValueError(f"{path}: expected a JSON list of accounts")
        return data
    rows = list(csv.DictReader(text.splitlines()))
    for number, row in enumerate(rows, start=2):
        if not row.get("app_key") or not row.get("master_secret"):
            raise ValueError(f"{path}:{number}: app_key and master_secret are required")
    return [{k: v for k, v in row.items() if v} for row in rows]
