"""A master secret never appears in a message, a job record, an event or a log line."""

from __future__ import annotations

import io
from collections.abc import Callable

import pytest

from tests.system import dramatiq_system
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.testing import wait_for


@pytest.mark.slow
def test_secrets_appear_nowhere(
    emulator_server: EmulatorServer, admin: EmulatorAdmin, log_capture: Callable[[str], io.StringIO]
) -> None:
    """Run successes, retries and auth failures through real workers, logging at DEBUG; then
    scan every key under the prefix (records, events, Dramatiq's messages) and every log line."""
    buffer = log_capture("DEBUG")
    with dramatiq_system(emulator_server, admin) as system:
        good = system.tenant()
        good_secret = system.credentials(good).master_secret
        bad = system.tenant()
        bad_secret = "a-wrong-master-secret-0123"
        system.runtime.accounts.add(bad, system.app_key(bad), bad_secret, replace=True)
        admin.set_faults(
            [{"kind": "error", "count": 1, "operations": ["query"]}], system.app_key(good)
        )
        ok = system.runtime.jobs.create(good, "保密").job_id
        query = system.runtime.jobs.query(good, 424_242).job_id
        refused = system.runtime.jobs.create(bad, "认证错").job_id
        wait_for(lambda: system.state(ok) == "pending_audit")
        wait_for(lambda: system.state(query) == "failed")
        wait_for(lambda: system.state(refused) == "parked")
        stored = _everything(system.runtime.store)
    logged = buffer.getvalue()
    assert "jsms_retry" in logged
    assert "account_paused" in logged
    for secret in (good_secret, bad_secret):
        assert secret not in stored
        assert secret not in logged


def _everything(store: object) -> str:
    """Every value under the store's prefix, as text, but the account registry's own hashes
    (where secrets live by design, encrypted when SIGNQ_SECRET_KEY is set)."""
    from worker.store import Store  # noqa: PLC0415

    assert isinstance(store, Store)
    r = store.raw
    out = []
    registry = f"{store.settings.prefix}:account:".encode()
    for key in r.scan_iter(match=f"{store.settings.prefix}:*".encode()):
        if key.startswith(registry):
            continue
        kind = r.type(key)
        if kind == b"hash":
            out.append(repr(r.hgetall(key)))
        elif kind == b"string":
            out.append(repr(r.get(key)))
        elif kind == b"stream":
            out.append(repr(r.xrange(key)))
        elif kind == b"list":
            out.append(repr(r.lrange(key, 0, -1)))
        elif kind in (b"set", b"zset"):
            out.append(repr(r.zrange(key, 0, -1) if kind == b"zset" else r.smembers(key)))
    text = "\n".join(out)
    assert "signature.submitted" in text  # the scan saw the events stream
    return text.encode().decode("unicode_escape", errors="ignore") + text
