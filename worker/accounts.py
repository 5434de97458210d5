"""The tenant registry: each account's app key and master secret, and its status.

Secrets are stored in Redis, encrypted with Fernet when ``SIGNQ_SECRET_KEY`` is set, and leave
this module only as ``Credentials`` for the client. They are never part of a message, a job
record, an event or a log line (the log redaction also scrubs every secret read here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from redis.exceptions import WatchError

from worker import events, logs
from worker.errors import AccountError, AccountExists, FileProblem, SecretKeyError
from worker.files import csv_rows
from worker.jsms.credentials import Credentials, mask
from worker.store import Store, fields, texts

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ENCRYPTED = "fernet:"
_PLAIN = "plain:"


@dataclass(frozen=True)
class Account:
    """What may be shown about an account: never its secret."""

    name: str
    app_key: str
    status: str
    blocked: bool
    paused_reason: str | None
    encrypted: bool

    @property
    def masked_key(self) -> str:
        """The app key as listings show it."""
        return mask(self.app_key)


class SecretBox:
    """Seals master secrets for storage: Fernet when a key is configured, else marked plain."""

    def __init__(self, key: str | None) -> None:
        self._fernet = Fernet(key.encode()) if key else None

    def seal(self, secret: str) -> str:
        """The stored form of a secret."""
        if self._fernet is None:
            return _PLAIN + secret
        return _ENCRYPTED + self._fernet.encrypt(secret.encode()).decode()

    def open(self, owner: str, stored: str) -> str:
        """The secret back; a clear error, naming its ``owner`` ("account acme", "webhook
        endpoint ep_1"), when it cannot be read with this configuration."""
        if stored.startswith(_PLAIN):
            return stored[len(_PLAIN) :]
        if not stored.startswith(_ENCRYPTED):
            raise AccountError(f"{owner}: stored secret has an unknown format")
        if self._fernet is None:
            raise SecretKeyError(
                f"{owner}: its secret is encrypted; set SIGNQ_SECRET_KEY to read it"
            )
        try:
            return self._fernet.decrypt(stored[len(_ENCRYPTED) :].encode()).decode()
        except InvalidToken:
            raise SecretKeyError(f"{owner}: SIGNQ_SECRET_KEY does not decrypt its secret") from None

    @staticmethod
    def rotate(stored: str, new_key: str, old_key: str | None) -> str:
        """A stored secret sealed again with ``new_key``: one sealed with either key, or
        stored plain, opens; so a rotation interrupted halfway is simply run again."""
        keys = [Fernet(new_key.encode())] + ([Fernet(old_key.encode())] if old_key else [])
        fernet = MultiFernet(keys)
        if stored.startswith(_PLAIN):
            return _ENCRYPTED + fernet.encrypt(stored[len(_PLAIN) :].encode()).decode()
        if not stored.startswith(_ENCRYPTED):
            raise AccountError("stored secret has an unknown format")
        try:
            return _ENCRYPTED + fernet.rotate(stored[len(_ENCRYPTED) :].encode()).decode()
        except InvalidToken:
            raise SecretKeyError(
                "neither the new key nor SIGNQ_SECRET_KEY decrypts this secret"
            ) from None


class Accounts:
    """Register, list, pause and resume accounts."""

    def __init__(self, store: Store, box: SecretBox) -> None:
        self.store = store
        self.keys = store.keys
        self.box = box
        self._opened: dict[tuple[str, str], Credentials] = {}

    def add(self, name: str, app_key: str, master_secret: str, *, replace: bool = False) -> None:
        """Register an account (or, with ``replace``, update its credentials)."""
        _check(name, app_key, master_secret)
        key = self.keys.account(name)
        if not replace and self.store.redis.exists(key):
            raise AccountExists(f"account {name} exists")
        self.store.redis.hset(
            key,
            mapping={"app_key": app_key, "secret": self.box.seal(master_secret)},
        )
        self.store.redis.hsetnx(key, "status", "active")
        self.store.redis.sadd(self.keys.accounts(), name)
        self.store.redis.zadd(self.keys.accounts_index(), {name: 0})

    def import_csv(self, path: Path, *, replace: bool = False) -> int:
        """Add every row of a CSV (account, app_key, master_secret); all rows are checked first."""
        try:
            parsed = csv_rows(path, {"account", "app_key", "master_secret"})
        except FileProblem as exc:
            raise AccountError(str(exc)) from None
        rows, problems = [], []
        for line, row in parsed:
            try:
                _check(row["account"], row["app_key"], row["master_secret"])
                rows.append(row)
            except AccountError as exc:
                problems.append(f"{path}:{line}: {exc}")
        names = [row["account"] for row in rows]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            problems.append(f"{path}: account(s) listed twice: {', '.join(duplicates)}")
        if problems:
            raise AccountError("\n".join(problems))
        for row in rows:
            self.add(row["account"], row["app_key"], row["master_secret"], replace=replace)
        return len(rows)

    def get(self, name: str) -> Account | None:
        """The account, or None."""
        data = fields(self.store.redis.hgetall(self.keys.account(name)))
        return _account(name, data) if data else None

    def require(self, name: str) -> Account:
        """The account, or an error naming it."""
        account = self.get(name)
        if account is None:
            raise AccountError(f"no account named {name!r}")
        return account

    def page(self, *, after: str = "", prefix: str = "", count: int = 50) -> list[Account]:
        """Up to ``count`` accounts by name after ``after``, whose names start with ``prefix``:
        one range read of the name index, however many accounts there are."""
        r = self.store.redis
        index = self.keys.accounts_index()
        pipe = r.pipeline(transaction=False)
        pipe.zcard(index)
        pipe.scard(self.keys.accounts())
        indexed, registered = pipe.execute()
        if indexed < registered:
            # Accounts registered before the index existed: indexed once, here.
            names = texts(r.smembers(self.keys.accounts()))
            if names:
                r.zadd(index, dict.fromkeys(names, 0))
        low = f"({after}" if after and after >= prefix else (f"[{prefix}" if prefix else "-")
        high = f"[{prefix}\xff" if prefix else "+"
        names = texts(r.zrangebylex(index, low, high, start=0, num=count))
        pipe = r.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.account(name))
        return [_account(n, fields(d)) for n, d in zip(names, pipe.execute(), strict=True) if d]

    def count(self) -> int:
        """How many accounts are registered."""
        return int(self.store.redis.scard(self.keys.accounts()))

    def all(self) -> list[Account]:
        """Every account, by name."""
        names = sorted(texts(self.store.redis.smembers(self.keys.accounts())))
        pipe = self.store.redis.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(self.keys.account(name))
        return [_account(n, fields(d)) for n, d in zip(names, pipe.execute(), strict=True) if d]

    def credentials(self, name: str, app_key: str, stored_secret: str) -> Credentials:
        """Credentials from what the start script read, decrypted once per distinct secret."""
        cached = self._opened.get((app_key, stored_secret))
        if cached is None:
            secret = self.box.open(f"account {name}", stored_secret)
            logs.register_secret(secret)
            cached = Credentials(app_key, secret)
            self._opened[(app_key, stored_secret)] = cached
        return cached

    def credentials_of(self, name: str) -> Credentials:
        """An account's credentials, read from the registry."""
        data = fields(self.store.redis.hgetall(self.store.keys.account(name)))
        if not data:
            raise AccountError(f"no account named {name!r}")
        return self.credentials(name, data["app_key"], data.get("secret", ""))

    def unreadable(self) -> dict[str, str]:
        """Accounts whose stored secret this process cannot open, with why (a worker refuses
        to start on them rather than fail every tenant's jobs)."""
        problems = {}
        for name, stored in self._stored_secrets():
            try:
                self.box.open(f"account {name}", stored)
            except AccountError as exc:
                problems[name] = str(exc)
        return problems

    def rotate_key(self, new_key: str, old_key: str | None) -> int:
        """Seal every stored secret with ``new_key`` (opened with it or ``old_key``); an
        account changed meanwhile is read again. Returns how many were sealed. Nothing is
        written until every secret has been opened: a wrong old key changes nothing."""
        sealed = {}
        for name, stored in self._stored_secrets():
            try:
                sealed[name] = (stored, SecretBox.rotate(stored, new_key, old_key))
            except AccountError as exc:
                raise type(exc)(f"account {name}: {exc}") from None
        for name, (before, after) in sealed.items():
            self._replace_secret(name, before, after, new_key, old_key)
        return len(sealed)

    def _stored_secrets(self) -> list[tuple[str, str]]:
        """Every account's name and stored secret, in one pipelined read."""
        names = sorted(texts(self.store.redis.smembers(self.keys.accounts())))
        pipe = self.store.redis.pipeline(transaction=False)
        for name in names:
            pipe.hget(self.keys.account(name), "secret")
        replies = zip(names, pipe.execute(), strict=True)
        return [(name, str(stored)) for name, stored in replies if stored is not None]

    def _replace_secret(
        self, name: str, before: str, after: str, new_key: str, old_key: str | None
    ) -> None:
        key = self.keys.account(name)
        with self.store.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call,unused-ignore]  # redis-py's typing gap
                    current = pipe.hget(key, "secret")
                    if current is None:
                        return
                    if current != before:
                        after = SecretBox.rotate(str(current), new_key, old_key)
                    pipe.multi()
                    pipe.hset(key, "secret", after)
                    pipe.execute()
                    return
                except WatchError:
                    continue

    def remove(self, name: str) -> None:
        """Forget an account; refused while it has outstanding jobs."""
        self.require(name)
        redis = self.store.redis
        holder = redis.get(self.keys.gate(name))
        parked = redis.llen(self.keys.parked(name))
        waiting = redis.scard(self.keys.waiting(name))
        if holder or parked or waiting:
            raise AccountError(
                f"account {name} has outstanding jobs (gate held: {'yes' if holder else 'no'}, "
                f"parked: {parked}, waiting: {waiting}); cancel them first"
            )
        redis.delete(self.keys.account(name))
        redis.srem(self.keys.accounts(), name)
        redis.zrem(self.keys.accounts_index(), name)

    def pause(self, name: str, reason: str = "paused by operator") -> bool:
        """Stop running the account's jobs (they wait, none fails); False if already paused."""
        self.require(name)
        body = events.make("account.paused", name, reason=reason)
        return self.store.set_account(name, "pause", body, reason).status == "paused"

    def resume(self, name: str) -> list[str]:
        """Run the account's jobs again; returns the job ids re-queued (to be enqueued)."""
        self.require(name)
        body = events.make("account.resumed", name)
        flip = self.store.set_account(name, "resume", body)
        if flip.status != "resumed":
            raise AccountError(f"account {name} is not paused")
        return flip.queued


def _check(name: str, app_key: str, master_secret: str) -> None:
    if not _NAME.fullmatch(name):
        raise AccountError(
            f"account name {name!r} must be 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    if not app_key.strip() or any(c.isspace() for c in app_key):
        raise AccountError(f"account {name}: app_key must be a non-empty word")
    if not master_secret.strip():
        raise AccountError(f"account {name}: master_secret is empty")


def _account(name: str, data: dict[str, str]) -> Account:
    return Account(
        name=name,
        app_key=data.get("app_key", ""),
        status=data.get("status", "active"),
        blocked=data.get("blocked") == "1",
        paused_reason=data.get("paused_reason"),
        encrypted=data.get("secret", "").startswith(_ENCRYPTED),
    )
