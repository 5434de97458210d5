"""Logging: one pipeline for structlog and the standard library, secrets never written."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable

import pytest
import structlog

from worker import logs


@pytest.fixture
def captured(log_capture: Callable[[str], io.StringIO]) -> io.StringIO:
    """JSON logging at INFO into a buffer (restored after the test)."""
    return log_capture("INFO")


def lines(buffer: io.StringIO) -> list[dict[str, object]]:
    """The JSON log lines written so far."""
    return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]


def test_secret_keys_are_redacted_and_app_keys_masked(captured: io.StringIO) -> None:
    """A secret under a secret-ish key is replaced; an app key shows only its ends."""
    structlog.get_logger("t").info(
        "account_added", master_secret="s3cr3t-value", app_key="7d431e42dfa6a6d693ac2d04"
    )
    (line,) = lines(captured)
    assert line["master_secret"] == logs.REDACTED
    assert line["app_key"] == "7d43…2d04"
    assert "s3cr3t-value" not in captured.getvalue()


def test_registered_secrets_are_scrubbed_everywhere(captured: io.StringIO) -> None:
    """A registered secret is scrubbed from any field and from stdlib library messages."""
    logs.register_secret("hunter2-master-secret")
    structlog.get_logger("t").warning("oops", detail="auth with hunter2-master-secret failed")
    logging.getLogger("dramatiq").error("library said hunter2-master-secret")
    text = captured.getvalue()
    assert "hunter2-master-secret" not in text
    assert text.count(logs.REDACTED) == 2
    events = [line["event"] for line in lines(captured)]
    assert events == ["oops", "library said [redacted]"]


def test_context_is_bound_and_cleared(captured: io.StringIO) -> None:
    """Context variables appear on every line while bound, and not after."""
    structlog.contextvars.bind_contextvars(job_id="j1", account="acme")
    structlog.get_logger("t").info("inside")
    structlog.contextvars.clear_contextvars()
    structlog.get_logger("t").info("outside")
    inside, outside = lines(captured)
    assert (inside["job_id"], inside["account"]) == ("j1", "acme")
    assert "job_id" not in outside


def test_scrubbing_finds_secrets_among_thousands() -> None:
    """With thousands of tenants' secrets registered, each one is still found anywhere in a
    string, overlapping ones included; text without a secret is left alone."""
    secrets = [f"tenant-secret-{n:05d}-{n * 7919 % 10007:05d}" for n in range(3000)]
    for secret in secrets:
        logs.register_secret(secret)
    logs.register_secret("tiny")
    text = f"a {secrets[1234]} b{secrets[2999]}c tiny {secrets[0]}"
    assert (
        logs.scrub(text) == f"a {logs.REDACTED} b{logs.REDACTED}c {logs.REDACTED} {logs.REDACTED}"
    )
    assert logs.scrub("nothing to hide here") == "nothing to hide here"


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_no_format_prints_a_secret_held_in_a_failing_frame(
    fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An exception logged where secrets are local variables (as in a run that met a Redis
    restart) shows a plain traceback: neither the secret nor its stored form appears, in JSON
    or on the console, from structlog or from a library's logger."""
    buffer = io.StringIO()
    monkeypatch.setattr("sys.stderr", buffer)
    logs.configure("INFO", fmt)
    try:
        secret = "the-master-secret-in-scope"
        logs.register_secret(secret)
        stored_secret = "plain:" + secret  # noqa: F841 - a local the frame holds
        reply = ["run", "7d431e42dfa6a6d693ac2d04", secret]  # noqa: F841 - likewise
        try:
            raise ConnectionError("Error 111 connecting to 127.0.0.1:6379")
        except ConnectionError:
            structlog.get_logger("worker.pipeline").exception("run_failed")
            logging.getLogger("dramatiq.worker").exception("Failed to process message")
    finally:
        structlog.reset_defaults()
        logging.getLogger().handlers.clear()
    text = buffer.getvalue()
    assert "Traceback" in text
    assert "ConnectionError" in text
    assert secret not in text
    assert "stored_secret" not in text
    assert "7d431e42dfa6a6d693ac2d04" not in text
