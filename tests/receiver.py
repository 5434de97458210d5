"""A webhook receiver on loopback for the tests: a real HTTP server that verifies each delivery
with signq's own ``verify`` (the standardwebhooks library) and answers as told."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from worker.webhooks import WebhookVerificationError, verify


@dataclass
class Received:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    event: dict[str, Any] | None
    verified: str  # "ok" or why not
    answered: int | str


@dataclass
class Receiver:
    """Answers with the next item of ``script`` (an HTTP status, ``"drop"`` to cut the
    connection, ``("sleep", s)`` to hold the answer, ``(status, headers)``), then ``default``."""

    secret: str = ""
    default: int = 200
    script: list[Any] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    # Requests of one account being answered at once, now and at most.
    in_flight: dict[str, int] = field(default_factory=dict)
    most_in_flight: int = 0

    def events(self) -> list[dict[str, Any]]:
        """The verified events received, in order."""
        with self.lock:
            return [r.event for r in self.received if r.event is not None and r.verified == "ok"]

    def answer(self) -> Any:
        with self.lock:
            return self.script.pop(0) if self.script else self.default


@contextmanager
def receiver(secret: str = "", **options: Any) -> Iterator[Receiver]:
    """A receiver served on 127.0.0.1 for the block."""
    state = Receiver(secret=secret, **options)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            event, verified = None, "ok"
            try:
                event = verify(headers, body, state.secret)
            except WebhookVerificationError as exc:
                verified = str(exc)
            action = state.answer()
            account = str((event or {}).get("account", ""))
            with state.lock:
                state.received.append(Received(headers, body, event, verified, str(action)))
                state.in_flight[account] = state.in_flight.get(account, 0) + 1
                state.most_in_flight = max(state.most_in_flight, state.in_flight[account])
            try:
                self._reply(action)
            finally:
                with state.lock:
                    state.in_flight[account] -= 1

        def _reply(self, action: Any) -> None:
            if action == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
                return
            extra: dict[str, str] = {}
            if isinstance(action, tuple) and action[0] == "sleep":
                time.sleep(action[1])
                action = 200
            elif isinstance(action, tuple):
                action, extra = action
            self.send_response(int(action))
            for name, value in extra.items():
                self.send_header(name, value)
            reply = b'{"ok":true}' if int(action) < 300 else b"no thanks"
            self.send_header("content-length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *_args: Any) -> None:
            """Quiet."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hooks"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
