"""A job as stored: its operations and states, the record, and the change that records an
accepted submission. Everything that reads or changes jobs shares this model."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from worker import events
from worker.jsms.models import SignRequest
from worker.keys import JOB_STATES
from worker.settings import PollPolicy
from worker.store import Change

OPERATIONS = ("create", "modify", "delete", "query")
GATED = frozenset({"create", "modify"})
STATES = JOB_STATES
TERMINAL = frozenset({"approved", "rejected", "deleted", "failed", "cancelled"})


@dataclass(frozen=True)
class JobSpec:
    """What a producer asks for."""

    op: str
    account: str
    request: SignRequest | None = None
    sign_id: int | None = None
    key: str | None = None
    cleanup: bool = False


@dataclass(frozen=True)
class Submitted:
    """The answer to a submission: the job id, its state, and whether it already existed."""

    job_id: str
    state: str
    duplicate: bool


@dataclass(frozen=True)
class JobRecord:
    """A job as stored (never holding a secret)."""

    id: str
    op: str
    account: str
    state: str
    sign: str | None
    type: int | None
    remark: str | None
    images: tuple[tuple[str, str], ...]
    sign_id: int | None
    key: str | None
    attempts: int
    uncertain: bool
    waiting_for: str | None
    error: dict[str, Any] | None
    result: dict[str, Any] | None
    created_at: int
    updated_at: int
    finished_at: int | None
    raw: dict[str, str]

    @property
    def gated(self) -> bool:
        """True for submissions, which hold the account's audit gate."""
        return self.op in GATED

    @property
    def terminal(self) -> bool:
        """True once nothing more will happen to the job."""
        return self.state in TERMINAL or self.finished_at is not None

    @property
    def trace(self) -> dict[str, str] | None:
        """The trace context the job was accepted in (tracing on), as W3C headers."""
        return stored_trace(self.raw.get("trace"))

    def ms(self, name: str) -> int | None:
        """A millisecond timestamp field, if set."""
        value = self.raw.get(name)
        return int(float(value)) if value else None

    @classmethod
    def from_hash(cls, data: dict[str, str]) -> JobRecord:
        """Parse a job hash."""
        return cls(
            id=data["id"],
            op=data["op"],
            account=data["account"],
            state=data["state"],
            sign=data.get("sign") or None,
            type=int(data["type"]) if data.get("type") else None,
            remark=data.get("remark") or None,
            images=tuple(tuple(pair) for pair in json.loads(data.get("images") or "[]")),
            sign_id=int(data["sign_id"]) if data.get("sign_id") else None,
            key=data.get("key") or None,
            attempts=int(data.get("attempts") or 0),
            uncertain=data.get("uncertain") == "1",
            waiting_for=data.get("waiting_for") or None,
            error=json.loads(data["error"]) if data.get("error") else None,
            result=json.loads(data["result"]) if data.get("result") else None,
            created_at=int(float(data.get("created_at") or 0)),
            updated_at=int(float(data.get("updated_at") or 0)),
            finished_at=int(float(data["finished_at"])) if data.get("finished_at") else None,
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The record as `signq jobs show --json` prints it."""
        return {
            "id": self.id,
            "op": self.op,
            "account": self.account,
            "state": self.state,
            "waiting_for": self.waiting_for,
            "sign": self.sign,
            "type": self.type,
            "remark": self.remark,
            "images": [name for _, name in self.images],
            "sign_id": self.sign_id,
            "key": self.key,
            "attempts": self.attempts,
            "uncertain": self.uncertain,
            "error": self.error,
            "result": self.result,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
        }


def submitted_change(record: JobRecord, sign_id: int, polls: PollPolicy) -> Change:
    """The change that records a submission the API accepted: pending audit, tracked, event."""
    return Change(
        id=record.id,
        from_=["submitting"],
        to="pending_audit",
        set={"sign_id": str(sign_id), "uncertain": "", "error": "", "waiting_for": ""},
        lease_clear=True,
        unblock=events.make("account.resumed", record.account, reason="external audit cleared"),
        track={
            "sign_id": str(sign_id),
            "due_in": polls.first_ms,
            "fields": {
                "sign": record.sign or "",
                "status": 0,
                "use_status": 0,
                "job_id": record.id,
                **({"trace": record.raw["trace"]} if record.raw.get("trace") else {}),
            },
        },
        events=[
            events.make(
                "signature.submitted",
                record.account,
                job_id=record.id,
                op=record.op,
                sign_id=sign_id,
                sign=record.sign,
                status=0,
            )
        ],
    )


def stored_trace(value: str | None) -> dict[str, str] | None:
    """A stored trace context (JSON of W3C headers), or None if there is none or it is bad."""
    if not value:
        return None
    try:
        parsed = json.loads(value)
    except ValueError:
        return None
    if not isinstance(parsed, dict):
        return None
    return {str(k): str(v) for k, v in parsed.items()}
