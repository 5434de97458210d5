"""The emulated JSMS account world: accounts, signatures, the audit clock and the counters.

Pure state, no HTTP: every operation is O(1) or O(log n) (dicts and one heap), so the emulator
stays fast with 100,000 signatures and thousands of accounts. Only the event loop touches it.
"""

from __future__ import annotations

import heapq
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from worker.jsms.errors import CODES
from worker.jsms.models import Status

FIRST_SIGN_ID = 10_001
REJECT_MARKER = "REJ"
APPROVE_MARKER = "PASS"
IN_USE_MARKER = "USE"
REFUSE_REASONS = (
    "签名与企业名称不符",
    "缺少营业执照等资质证明",
    "signature does not match the company name",
)


class ApiFault(Exception):
    """An error answer of the API: a JSMS code, with the HTTP status the seed's table gives it."""

    def __init__(self, code: int, message: str | None = None) -> None:
        _, status, default_message = CODES[code]
        super().__init__(message or default_message)
        self.code = code
        self.http_status = status
        self.message = message or default_message

    def body(self) -> dict[str, Any]:
        """The JSON error body."""
        return {"error": {"code": self.code, "message": self.message}}


@dataclass(frozen=True)
class AuditRules:
    """How the audit clock decides; deterministic for a given seed."""

    audit_delay: float = 2.0
    approval_rate: float = 0.9
    in_use_rate: float = 0.1
    seed: int = 0
    default_signatures: bool = True


@dataclass
class Account:
    """An emulated app: credentials, service flag, callback URL and its one pending audit."""

    app_key: str
    master_secret: str = field(repr=False)
    sms_enabled: bool = True
    callback_url: str | None = None
    audit_delay: float | None = None
    pending_sign_id: int | None = None
    default_sign_id: int | None = None


@dataclass
class Sig:
    """One emulated signature."""

    sign_id: int
    app_key: str
    sign: str
    type: int | None
    remark: str | None
    image_hashes: tuple[str, ...]
    status: Status = Status.PENDING
    use_status: int = 0
    refuse_reason: str | None = None
    generation: int = 0
    resolve_at: float = 0.0
    resolved_wall: float | None = None

    @property
    def content_key(self) -> tuple[object, ...]:
        """What makes two creates duplicates of each other."""
        return (self.sign, self.type, self.remark, self.image_hashes)


@dataclass(frozen=True)
class SignFields:
    """The parsed fields of a create or modify."""

    sign: str
    type: int | None
    remark: str | None
    image_hashes: tuple[str, ...]


class World:
    """All emulated state. Methods raise ApiFault with the code the real API would answer."""

    def __init__(
        self, rules: AuditRules | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rules = rules or AuditRules()
        self.clock = clock
        self.accounts: dict[str, Account] = {}
        self.signatures: dict[int, Sig] = {}
        self.by_account: dict[str, set[int]] = {}
        self._next_id = FIRST_SIGN_ID
        self._due: list[tuple[float, int, int]] = []
        self._live_content: Counter[tuple[str, tuple[object, ...]]] = Counter()
        self.requests: Counter[tuple[str, str, str]] = Counter()
        self.duplicate_creates: Counter[str] = Counter()

    def add_account(self, account: Account) -> Account:
        """Register or replace an account, keeping its signatures and pending audit."""
        old = self.accounts.get(account.app_key)
        if old is not None:
            account.pending_sign_id = old.pending_sign_id
            account.default_sign_id = old.default_sign_id
        self.accounts[account.app_key] = account
        return account

    def authenticate(self, app_key: str | None, secret: str | None) -> Account:
        """The account behind Basic credentials, or 50001/50002/50008."""
        if app_key is None:
            raise ApiFault(50001)
        account = self.accounts.get(app_key)
        if account is None or secret is None or account.master_secret != secret:
            raise ApiFault(50002)
        if not account.sms_enabled:
            raise ApiFault(50008)
        return account

    def create(self, account: Account, fields: SignFields) -> Sig:
        """A new signature, pending audit; 50103 while another of the account's is pending."""
        self._check_no_pending(account)
        sign_id = self._next_id
        self._next_id += 1
        sig = Sig(
            sign_id=sign_id,
            app_key=account.app_key,
            sign=fields.sign,
            type=fields.type,
            remark=fields.remark,
            image_hashes=fields.image_hashes,
        )
        key = (account.app_key, sig.content_key)
        if self._live_content[key] > 0:
            self.duplicate_creates[account.app_key] += 1
        self._live_content[key] += 1
        self.signatures[sign_id] = sig
        self.by_account.setdefault(account.app_key, set()).add(sign_id)
        self._submit(account, sig)
        return sig

    def modify(self, account: Account, sign_id: int, fields: SignFields) -> Sig:
        """Resubmit a rejected signature with new content."""
        sig = self._owned(account, sign_id)
        # Pending anywhere on the account comes first: a retried modify that already took effect
        # answers 50103, which is how a client learns its lost first attempt went through.
        self._check_no_pending(account)
        if sig.status is not Status.REJECTED:
            raise ApiFault(50102, "only a signature that failed audit can be modified")
        self._forget_content(sig)
        sig.sign, sig.type, sig.remark = fields.sign, fields.type, fields.remark
        sig.image_hashes = fields.image_hashes
        self._live_content[(account.app_key, sig.content_key)] += 1
        sig.refuse_reason = None
        self._submit(account, sig)
        return sig

    def query(self, account: Account, sign_id: int) -> dict[str, Any]:
        """The query answer for a signature of this account."""
        sig = self._owned(account, sign_id)
        body: dict[str, Any] = {
            "sign_id": sig.sign_id,
            "sign": sig.sign,
            "status": int(sig.status),
            "use_status": sig.use_status,
        }
        if self.rules.default_signatures:
            body["is_default"] = int(account.default_sign_id == sig.sign_id)
        return body

    def delete(self, account: Account, sign_id: int) -> None:
        """Delete a signature; 50105 when it is in use or is the account's default."""
        sig = self._owned(account, sign_id)
        if sig.use_status == 1 or account.default_sign_id == sign_id:
            raise ApiFault(50105)
        if account.pending_sign_id == sign_id:
            account.pending_sign_id = None
        self._forget_content(sig)
        del self.signatures[sign_id]
        self.by_account[account.app_key].discard(sign_id)

    def advance(self, now: float | None = None) -> list[Sig]:
        """Resolve every audit that is due; returns the signatures that changed."""
        now = self.clock() if now is None else now
        resolved = []
        while self._due and self._due[0][0] <= now:
            _, sign_id, generation = heapq.heappop(self._due)
            sig = self.signatures.get(sign_id)
            if sig is None or sig.generation != generation or sig.status is not Status.PENDING:
                continue
            self.resolve(sig, self._decide(sig))
            resolved.append(sig)
        return resolved

    def resolve(
        self,
        sig: Sig,
        status: Status,
        *,
        use_status: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Set a signature's audit result (the clock's decision, or an admin's)."""
        account = self.accounts[sig.app_key]
        sig.status = status
        sig.resolved_wall = time.time() if status is not Status.PENDING else None
        if account.pending_sign_id == sig.sign_id and status is not Status.PENDING:
            account.pending_sign_id = None
        if status is Status.APPROVED:
            sig.refuse_reason = None
            if use_status is None:
                use_status = int(
                    self._roll(sig, "use") < self.rules.in_use_rate
                    or (IN_USE_MARKER in sig.sign.upper())
                )
            if self.rules.default_signatures and account.default_sign_id is None:
                account.default_sign_id = sig.sign_id
        elif status is Status.REJECTED:
            sig.refuse_reason = reason or REFUSE_REASONS[sig.sign_id % len(REFUSE_REASONS)]
            use_status = 0
        if use_status is not None:
            sig.use_status = use_status

    def _decide(self, sig: Sig) -> Status:
        upper = sig.sign.upper()
        if REJECT_MARKER in upper:
            return Status.REJECTED
        if APPROVE_MARKER in upper:
            return Status.APPROVED
        approved = self._roll(sig, "audit") < self.rules.approval_rate
        return Status.APPROVED if approved else Status.REJECTED

    def _roll(self, sig: Sig, purpose: str) -> float:
        return random.Random(f"{self.rules.seed}:{purpose}:{sig.sign_id}:{sig.generation}").random()

    def _submit(self, account: Account, sig: Sig) -> None:
        delay = account.audit_delay if account.audit_delay is not None else self.rules.audit_delay
        sig.status = Status.PENDING
        sig.use_status = 0
        sig.generation += 1
        sig.resolve_at = self.clock() + delay
        account.pending_sign_id = sig.sign_id
        heapq.heappush(self._due, (sig.resolve_at, sig.sign_id, sig.generation))

    def _check_no_pending(self, account: Account) -> None:
        if account.pending_sign_id is not None:
            raise ApiFault(50103)

    def _owned(self, account: Account, sign_id: int) -> Sig:
        sig = self.signatures.get(sign_id)
        if sig is None or sig.app_key != account.app_key:
            raise ApiFault(50102)
        return sig

    def _forget_content(self, sig: Sig) -> None:
        key = (sig.app_key, sig.content_key)
        self._live_content[key] -= 1
        if self._live_content[key] <= 0:
            del self._live_content[key]

    def stats(self, app_key: str | None = None) -> dict[str, Any]:
        """Counters for tests and benchmarks, for one account or all."""
        by_op: dict[str, dict[str, int]] = {}
        for (key, operation, code), count in self.requests.items():
            if app_key is None or key == app_key:
                codes = by_op.setdefault(operation, {})
                codes[str(code)] = codes.get(str(code), 0) + count
        if app_key is None:
            duplicates = sum(self.duplicate_creates.values())
        else:
            duplicates = self.duplicate_creates[app_key]
        return {
            "requests": by_op,
            "audit_pending_answers": sum(c.get("50103", 0) for c in by_op.values()),
            "duplicate_creates": duplicates,
            "accounts": len(self.accounts),
            "signatures": len(self.signatures)
            if app_key is None
            else len(self.by_account.get(app_key, ())),
        }
