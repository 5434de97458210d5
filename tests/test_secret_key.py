"""SIGNQ_SECRET_KEY: a wrong key stops a worker, never a tenant; rotation loses no account."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.system import System
from worker import cli
from worker.accounts import Accounts, SecretBox
from worker.attempt import RetryLater
from worker.errors import SecretKeyError

SECRET = "5e987ac6d2e04d95a9d8f0d1"


def sealed_with(system: System, key: str | None) -> Accounts:
    """The registry of this system as a process with ``key`` sees it."""
    return Accounts(system.runtime.store, SecretBox(key))


def test_a_worker_with_the_wrong_key_neither_fails_nor_pauses_the_tenant(system: System) -> None:
    """A job whose secret this worker cannot open waits (queued, owned by the outbox) for a
    worker that can; the account stays active and the job runs once the key is right."""
    key = Fernet.generate_key().decode()
    account = system.tenant()
    app_key = system.app_key(account)
    secret = system.credentials(account).master_secret
    sealed_with(system, key).add(account, app_key, secret, replace=True)
    job = system.runtime.jobs.query(account, 1).job_id
    system.runtime.accounts.box = SecretBox(Fernet.generate_key().decode())
    with pytest.raises(RetryLater):
        system.drain()
    record = system.runtime.jobs.require(job)
    assert (record.state, record.waiting_for) == ("queued", "secret_key")
    assert system.runtime.accounts.require(account).status == "active"
    store = system.runtime.store
    assert store.redis.zscore(store.keys.outbox(), job) is not None
    system.runtime.accounts.box = SecretBox(key)
    store.redis.hset(store.keys.job(job), "run_at", 0)
    system.sent.append(job)
    assert system.drain() == ["failed"]  # sign id 1 is nobody's: the API's own answer


def test_the_worker_command_refuses_to_start_with_a_key_that_opens_nothing(
    system: System, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`signq worker` checks the registry first: one line naming the problem, exit 2."""
    sealed_with(system, Fernet.generate_key().decode()).add("acme", "k1", SECRET)
    monkeypatch.setenv("SIGNQ_PREFIX", system.settings.prefix)
    monkeypatch.setenv("SIGNQ_SECRET_KEY", Fernet.generate_key().decode())
    assert cli.main(["worker", "--processes", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("signq: SIGNQ_SECRET_KEY cannot open the stored secret of 1 account")
    assert "rotate-key" in err
    assert len(err.splitlines()) == 1
    monkeypatch.delenv("SIGNQ_SECRET_KEY")
    assert cli.main(["accounts", "list"]) == 0
    assert "warning: SIGNQ_SECRET_KEY cannot open" in capsys.readouterr().err


def test_rotation_reseals_every_secret_and_can_run_again(
    system: System, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rotate-key seals plain and old-key secrets with the new key; run again after an
    interruption (some already rotated) it still succeeds; the old key then opens nothing."""
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    sealed_with(system, old).add("a1", "k1", SECRET + "1")
    sealed_with(system, None).add("a2", "k2", SECRET + "2")
    sealed_with(system, old).add("a3", "k3", SECRET + "3")
    # An interrupted earlier run: a1 already sealed with the new key.
    sealed_with(system, new).add("a1", "k1", SECRET + "1", replace=True)
    key_file = tmp_path / "new.key"
    key_file.write_text(new + "\n", encoding="utf-8")
    monkeypatch.setenv("SIGNQ_PREFIX", system.settings.prefix)
    monkeypatch.setenv("SIGNQ_SECRET_KEY", old)
    assert cli.main(["accounts", "rotate-key", "--new-key-file", str(key_file)]) == 0
    assert cli.main(["accounts", "rotate-key", "--new-key-file", str(key_file)]) == 0
    reader = sealed_with(system, new)
    assert reader.unreadable() == {}
    for n in (1, 2, 3):
        stored = system.runtime.store.redis.hget(
            system.runtime.store.keys.account(f"a{n}"), "secret"
        )
        assert reader.credentials(f"a{n}", f"k{n}", stored).master_secret == SECRET + str(n)
    assert set(sealed_with(system, old).unreadable()) == {"a1", "a2", "a3"}


def test_rotation_with_a_wrong_old_key_changes_nothing(system: System) -> None:
    """A secret that neither key opens stops the rotation before anything is written."""
    sealed_with(system, Fernet.generate_key().decode()).add("a1", "k1", SECRET)
    sealed_with(system, None).add("a2", "k2", SECRET)
    before = system.runtime.store.redis.hget(system.runtime.store.keys.account("a2"), "secret")
    with pytest.raises(SecretKeyError, match="account a1"):
        system.runtime.accounts.rotate_key(
            Fernet.generate_key().decode(), Fernet.generate_key().decode()
        )
    after = system.runtime.store.redis.hget(system.runtime.store.keys.account("a2"), "secret")
    assert before == after


def test_a_new_key_that_is_not_a_fernet_key_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The new key is checked like SIGNQ_SECRET_KEY, and named."""
    key_file = tmp_path / "bad.key"
    key_file.write_text("not-a-key", encoding="utf-8")
    assert cli.main(["accounts", "rotate-key", "--new-key-file", str(key_file)]) == 2
    assert capsys.readouterr().err.startswith("signq: the new key must be a Fernet key")
