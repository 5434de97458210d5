"""The tenant registry: secrets stored safely, clear errors, pause and resume."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from tests.system import System
from worker.accounts import Accounts, SecretBox
from worker.errors import AccountError, AccountExists

SECRET = "5e987ac6d2e04d95a9d8f0d1"


def raw_values(system: System) -> str:
    """Everything stored under the system's prefix, as one string."""
    r = system.runtime.store.redis
    out = []
    for key in r.scan_iter(match=f"{system.settings.prefix}:*"):
        kind = r.type(key)
        if kind == "hash":
            out.append(repr(r.hgetall(key)))
        elif kind == "string":
            out.append(repr(system.runtime.store.raw.get(key)))
        elif kind == "stream":
            out.append(repr(r.xrange(key)))
        elif kind == "list":
            out.append(repr(r.lrange(key, 0, -1)))
    return "\n".join(out)


def test_secrets_are_encrypted_at_rest_with_a_key(system: System) -> None:
    """With SIGNQ_SECRET_KEY, Redis holds only a Fernet token; the credentials come back."""
    key = Fernet.generate_key().decode()
    accounts = Accounts(system.runtime.store, SecretBox(key))
    accounts.add("acme", "7d431e42dfa6a6d693ac2d04", SECRET)
    assert SECRET not in raw_values(system)
    stored = system.runtime.store.redis.hget(system.runtime.store.keys.account("acme"), "secret")
    assert accounts.credentials("acme", "7d431e42dfa6a6d693ac2d04", stored).master_secret == SECRET
    assert accounts.require("acme").encrypted


def test_encrypted_secret_without_the_key_is_a_clear_error(system: System) -> None:
    """Reading an encrypted secret without (or with another) key names the problem."""
    Accounts(system.runtime.store, SecretBox(Fernet.generate_key().decode())).add(
        "acme", "k1", SECRET
    )
    stored = system.runtime.store.redis.hget(system.runtime.store.keys.account("acme"), "secret")
    with pytest.raises(AccountError, match="set SIGNQ_SECRET_KEY"):
        Accounts(system.runtime.store, SecretBox(None)).credentials("acme", "k1", stored)
    with pytest.raises(AccountError, match="does not decrypt"):
        Accounts(system.runtime.store, SecretBox(Fernet.generate_key().decode())).credentials(
            "acme", "k1", stored
        )


def test_listing_never_shows_a_secret(system: System) -> None:
    """Accounts listed carry a masked app key and no secret."""
    system.runtime.accounts.add("acme", "7d431e42dfa6a6d693ac2d04", SECRET)
    (account,) = system.runtime.accounts.all()
    assert account.masked_key == "7d43…2d04"
    assert SECRET not in repr(account)


@pytest.mark.parametrize(
    ("name", "app_key", "secret", "says"),
    [
        ("bad name", "k", "s", "must be 1-64 letters"),
        ("", "k", "s", "must be 1-64 letters"),
        ("ok", "", "s", "app_key must be a non-empty word"),
        ("ok", "k k", "s", "app_key must be a non-empty word"),
        ("ok", "k", "  ", "master_secret is empty"),
    ],
)
def test_bad_accounts_are_refused(
    system: System, name: str, app_key: str, secret: str, says: str
) -> None:
    """Names, app keys and secrets are checked, and the error says which."""
    with pytest.raises(AccountError, match=says):
        system.runtime.accounts.add(name, app_key, secret)


def test_adding_twice_needs_replace(system: System) -> None:
    """An existing account is only changed on purpose."""
    system.runtime.accounts.add("acme", "k1", "s1")
    with pytest.raises(AccountExists, match="account acme exists"):
        system.runtime.accounts.add("acme", "k2", "s2")
    system.runtime.accounts.add("acme", "k2", "s2", replace=True)
    assert system.runtime.accounts.require("acme").app_key == "k2"


def test_import_checks_every_row_first(system: System, tmp_path: Path) -> None:
    """A CSV with bad rows imports nothing and reports each bad line."""
    path = tmp_path / "tenants.csv"
    path.write_text(
        "account,app_key,master_secret\n"
        "good-1,key1,secret1\n"
        "bad name,key2,secret2\n"
        "good-2,,secret3\n"
        "good-1,key4,secret4\n"
    )
    with pytest.raises(AccountError) as caught:
        system.runtime.accounts.import_csv(path)
    message = str(caught.value)
    assert f"{path}:3:" in message
    assert f"{path}:4:" in message
    assert "listed twice: good-1" in message
    assert system.runtime.accounts.all() == []


def test_import_of_a_good_file(system: System, tmp_path: Path) -> None:
    """All rows of a good file are registered."""
    path = tmp_path / "tenants.csv"
    path.write_text("account,app_key,master_secret\na1,k1,s1\na2,k2,s2\n")
    assert system.runtime.accounts.import_csv(path) == 2
    assert [a.name for a in system.runtime.accounts.all()] == ["a1", "a2"]


def test_import_needs_its_columns(system: System, tmp_path: Path) -> None:
    """A file without the expected columns says which are missing."""
    path = tmp_path / "tenants.csv"
    path.write_text("name,key\na,b\n")
    with pytest.raises(AccountError, match="missing column"):
        system.runtime.accounts.import_csv(path)


def test_remove_is_refused_while_jobs_are_outstanding(system: System) -> None:
    """An account with a held gate cannot be removed until its jobs are settled."""
    account = system.tenant()
    job = system.runtime.jobs.create(account, "还在排队")
    with pytest.raises(AccountError, match="outstanding jobs"):
        system.runtime.accounts.remove(account)
    system.runtime.jobs.cancel(job.job_id)
    system.runtime.accounts.remove(account)
    assert system.runtime.accounts.get(account) is None


def test_pause_and_resume_publish_once(system: System) -> None:
    """Pausing twice publishes one event; resuming a running account is an error."""
    account = system.tenant()
    assert system.runtime.accounts.pause(account, "rotating credentials")
    assert not system.runtime.accounts.pause(account)
    assert system.runtime.accounts.resume(account) == []
    with pytest.raises(AccountError, match="is not paused"):
        system.runtime.accounts.resume(account)
    kinds = [e["type"] for e in system.events(account)]
    assert kinds == ["account.paused", "account.resumed"]


def test_cli_reads_the_secret_from_stdin_never_argv(system: System) -> None:
    """`signq accounts add` takes the secret on stdin; `accounts list` never prints it."""
    env = {
        "SIGNQ_PREFIX": system.settings.prefix,
        "SIGNQ_REDIS_URL": system.settings.redis_url,
        "PATH": "/usr/bin:/bin",
    }
    add = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "accounts",
            "add",
            "cli-acct",
            "--app-key",
            "7d431e42dfa6a6d693ac2d04",
        ],
        input=SECRET + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert add.returncode == 0, add.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "worker", "accounts", "list"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert "cli-acct" in listing.stdout
    assert "7d43…2d04" in listing.stdout
    assert SECRET not in listing.stdout + listing.stderr + add.stdout + add.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "worker", "accounts", "add", "x y", "--app-key", "k"],
        input="s\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert bad.returncode == 2
    assert "must be 1-64 letters" in bad.stderr
