"""Jobs: the producer API and the operator's actions on jobs (the record is ``worker.records``).

A producer call validates everything first (the client's content rules, the account, the sign
id, the key), stores images once by content hash, and then accepts the job in one atomic script
that also applies idempotency and, for submissions, takes the account's gate or parks the job in
the account's FIFO. Only a job that holds its gate (or needs none) gets a Dramatiq message; the
message carries the job id and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

from worker import events, tracing
from worker.accounts import Accounts
from worker.dispatch import Dispatcher
from worker.errors import JobError
from worker.jsms.errors import ValidationError
from worker.jsms.models import Image, SignRequest, validate_request, validate_sign_id
from worker.metrics import metrics
from worker.records import (
    GATED,
    OPERATIONS,
    STATES,
    JobRecord,
    JobSpec,
    Submitted,
    submitted_change,
)
from worker.store import Change, Store, fields, text, texts

MAX_KEY_CHARS = 200
ImageLike = Image | bytes | bytearray | str | os.PathLike[str]


class Jobs:
    """The producer API and job administration."""

    def __init__(self, store: Store, accounts: Accounts, dispatch: Dispatcher) -> None:
        self.store = store
        self.keys = store.keys
        self.settings = store.settings
        self.accounts = accounts
        self.dispatch = dispatch

    def create(
        self,
        account: str,
        sign: str,
        *,
        images: Iterable[ImageLike] = (),
        type: int | None = None,
        remark: str | None = None,
        key: str | None = None,
    ) -> Submitted:
        """Enqueue a new signature for audit; images as ``Image``, bytes or file paths."""
        request = SignRequest(sign, as_images(images), type, remark)
        return self.submit(JobSpec("create", account, request=request, key=key))

    def modify(
        self,
        account: str,
        sign_id: int,
        sign: str,
        *,
        images: Iterable[ImageLike] = (),
        type: int | None = None,
        remark: str | None = None,
        key: str | None = None,
    ) -> Submitted:
        """Enqueue a resubmission of a rejected signature."""
        request = SignRequest(sign, as_images(images), type, remark)
        return self.submit(JobSpec("modify", account, request=request, sign_id=sign_id, key=key))

    def delete(self, account: str, sign_id: int, *, key: str | None = None) -> Submitted:
        """Enqueue a delete."""
        return self.submit(JobSpec("delete", account, sign_id=sign_id, key=key))

    def query(self, account: str, sign_id: int, *, key: str | None = None) -> Submitted:
        """Enqueue a query; its answer lands in the job's result."""
        return self.submit(JobSpec("query", account, sign_id=sign_id, key=key))

    def submit(self, spec: JobSpec) -> Submitted:
        """Validate, store and accept one job, and send its message if it may run now."""
        (submitted,) = self.submit_many([spec])
        if isinstance(submitted, Exception):
            raise submitted
        return submitted

    def submit_many(self, specs: Sequence[JobSpec]) -> list[Submitted | Exception]:
        """Accept many jobs with pipelined writes; each answer is a Submitted or its error.

        Every spec is validated before anything is written; a bad one gets its error and the
        others go ahead. With tracing on, this is the ``signq.job.accept`` span, and each job
        keeps its context: the job's run and the polls of its signature join its trace.
        """
        with tracing.span("signq.job.accept", kind="producer", jobs=len(specs)) as span:
            results = self._submit_many(specs)
            if len(specs) == 1 and not isinstance(results[0], Exception):
                tracing.annotate(
                    span,
                    job_id=results[0].job_id,
                    account=specs[0].account,
                    op=specs[0].op,
                    state=results[0].state,
                )
            return results

    def _submit_many(self, specs: Sequence[JobSpec]) -> list[Submitted | Exception]:
        prepared: list[tuple[JobSpec, dict[str, Any]] | Exception] = []
        images: dict[str, bytes] = {}
        context = json.dumps(tracing.carrier()) if tracing.enabled() else ""
        for spec in specs:
            try:
                payload = self._prepare(spec)
            except (ValidationError, JobError) as exc:
                prepared.append(exc)
                continue
            if context:
                payload["fields"]["trace"] = context
            prepared.append((spec, payload))
            if spec.request is not None:
                for image in spec.request.images:
                    images[image.sha256] = image.data
        if images:
            ttl = self.settings.retention.image_ms
            pipe = self.store.raw.pipeline(transaction=False)
            for sha, data in images.items():
                pipe.set(self.keys.image(sha), data, px=ttl)
            pipe.execute()
        replies = iter(
            self.store.submit([item[1] for item in prepared if not isinstance(item, Exception)])
        )
        results: list[Submitted | Exception] = []
        to_send: list[str] = []
        for item in prepared:
            if isinstance(item, Exception):
                results.append(item)
                continue
            spec, payload = item
            intake = next(replies)
            results.append(self._answer(spec, payload, intake.outcome, intake.value, to_send))
        if to_send:
            self.dispatch.jobs(to_send)
        return results

    def _answer(
        self,
        spec: JobSpec,
        payload: dict[str, Any],
        outcome: str,
        value: str,
        to_send: list[str],
    ) -> Submitted | Exception:
        if outcome == "no_account":
            return JobError(f"account: no account named {spec.account!r}")
        if outcome == "full":
            return JobError(
                f"account {spec.account} has {value} parked jobs, the limit "
                f"(SIGNQ_MAX_PARKED_PER_ACCOUNT={self.settings.max_parked_per_account}); "
                "try again once some have gone through"
            )
        if outcome == "duplicate":
            state = text(self.store.redis.hget(self.keys.job(value), "state")) or "unknown"
            return Submitted(value, state, duplicate=True)
        accepted, parked = _event_counters()
        accepted.inc()
        if outcome == "queued":
            to_send.append(payload["id"])
        else:
            parked.inc()
        return Submitted(payload["id"], outcome, duplicate=False)

    def _prepare(self, spec: JobSpec) -> dict[str, Any]:
        """Check a spec and build the submit script's argument (the script checks that the
        account exists, in the same step that accepts the job)."""
        if spec.op not in OPERATIONS:
            raise JobError(f"op must be one of {', '.join(OPERATIONS)}, got {spec.op!r}")
        key = _check_key(spec.key)
        fields: dict[str, Any] = {"op": spec.op, "account": spec.account}
        content = ""
        if spec.op in GATED:
            if spec.request is None:
                raise ValidationError("sign", "is required")
            request = validate_request(spec.request, self.settings.max_image_bytes)
            fields["sign"] = request.sign
            if request.type is not None:
                fields["type"] = request.type
            if request.remark is not None:
                fields["remark"] = request.remark
            if request.images:
                fields["images"] = json.dumps(
                    [[image.sha256, image.filename] for image in request.images]
                )
            fields["gate"] = "1"
            if spec.op == "create" and not key:
                content = _content_key(request)
        if spec.op != "create":
            # A string all the way: a Lua number would turn a long id into 1e+20.
            fields["sign_id"] = str(validate_sign_id(spec.sign_id))
        job_id = secrets.token_hex(16)
        fields["id"] = job_id
        if key:
            fields["key"] = key
        if spec.cleanup:
            fields["cleanup"] = "1"
        if content:
            fields["content"] = content
        common = {"job_id": job_id, "op": spec.op, "sign": fields.get("sign")}
        return {
            "id": job_id,
            "account": spec.account,
            "gate": spec.op in GATED,
            "cap": self.settings.max_parked_per_account,
            "key": key,
            "content": content,
            "fields": fields,
            "accepted": events.make(
                "job.accepted",
                spec.account,
                sign_id=int(fields["sign_id"]) if "sign_id" in fields else None,
                **common,
            ),
        }

    def image(self, sha256: str) -> bytes | None:
        """A stored audit image."""
        data = self.store.raw.get(self.keys.image(sha256))
        return data if isinstance(data, bytes) else None

    def get(self, job_id: str) -> JobRecord | None:
        """A job record, or None. A parked job the gate was handed to (its record is left as it
        was until its run starts) shows ``waiting_for: start``."""
        data = fields(self.store.redis.hgetall(self.keys.job(job_id)))
        if not data:
            return None
        record = JobRecord.from_hash(data)
        self.store.known(job_id, record.account)
        if record.state == "parked" and record.waiting_for == "gate":
            holder = self.store.redis.get(self.keys.gate(record.account))
            if text(holder) == job_id:
                record = replace(record, waiting_for="start")
        return record

    def require(self, job_id: str) -> JobRecord:
        """A job record, or an error naming the id."""
        record = self.get(job_id)
        if record is None:
            raise JobError(f"no job {job_id!r} (unknown, or expired after its retention)")
        return record

    def find(
        self,
        *,
        state: str | None = None,
        account: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[JobRecord]:
        """Newest jobs first, by state or account (expired ids are pruned as they are met)."""
        if state is not None and state not in STATES:
            raise JobError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        index = (
            self.keys.jobs_by_account(account)
            if account
            else self.keys.jobs_by_state(state or "queued")
        )
        redis = self.store.redis
        ids = texts(redis.zrevrange(index, offset, offset + max(0, limit * 4)))
        pipe = redis.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(self.keys.job(job_id))
        records, gone = [], []
        for job_id, data in zip(ids, pipe.execute(), strict=True):
            if not data:
                gone.append(job_id)
                continue
            record = JobRecord.from_hash(fields(data))
            if state is None or record.state == state:
                records.append(record)
        if gone:
            redis.zrem(index, *gone)
        return records[:limit]

    def cancel(self, job_id: str) -> None:
        """Cancel a job that has not been submitted yet (queued or parked)."""
        self._settle(job_id, ["queued", "parked"], "cancelled", "cancelled by operator")

    def abandon(self, job_id: str) -> None:
        """Give up on a job's audit (pending or unconfirmed): the account's gate moves on."""
        self._settle(
            job_id,
            ["queued", "parked", "pending_audit", "unconfirmed"],
            "cancelled",
            "abandoned by operator; the account's gate was released",
        )

    def retry(self, job_id: str) -> str:
        """Run a failed or cancelled job again; returns its new state (queued or parked)."""
        retried = self.store.retry(job_id)
        if retried.state == "refused":
            raise JobError(
                f"job {job_id} is {retried.before or 'unknown'}; "
                "only a failed or cancelled job is retried"
            )
        if retried.state == "queued":
            self.dispatch.jobs([job_id])
        return retried.state

    def confirm(self, job_id: str, sign_id: int, *, by: str = "operator") -> None:
        """Settle an unconfirmed create: its signature was found (by an operator, a callback)."""
        record = self.require(job_id)
        sign_id = validate_sign_id(sign_id)
        if record.state != "unconfirmed":
            raise JobError(f"job {job_id} is {record.state}, not unconfirmed")
        change = submitted_change(record, sign_id, self.settings.poll_policy)
        change.from_ = ["unconfirmed"]
        change.set["confirmed_by"] = by
        if not self.store.apply(change).applied:
            raise JobError(f"job {job_id} changed meanwhile; look again")

    def _settle(self, job_id: str, allowed: list[str], to: str, why: str) -> None:
        record = self.require(job_id)
        if record.state not in allowed:
            raise JobError(
                f"job {job_id} is {record.state}; only a job that is "
                f"{' or '.join(allowed)} can be {to}"
            )
        change = Change(
            id=job_id,
            from_=allowed,
            to=to,
            set={"error": json.dumps({"code": None, "message": why}), "waiting_for": ""},
            unpark=True,
            release=record.gated,
            terminal=self.settings.retention.job_ms,
        )
        applied = self.store.apply(change)
        if not applied.applied:
            raise JobError(f"job {job_id} changed meanwhile (now {applied.previous}); look again")
        if applied.next_job:
            self.dispatch.jobs([applied.next_job])


@cache
def _event_counters() -> tuple[Any, Any]:
    """The accepted and parked event counters, looked up once (submission is a hot loop)."""
    counter = metrics().events
    return counter.labels("job.accepted"), counter.labels("job.parked")


def as_images(values: Iterable[ImageLike]) -> tuple[Image, ...]:
    """Producer images as ``Image``: bytes are named by position, a path is read; anything else
    is a validation error naming the item."""
    if isinstance(values, str | bytes | os.PathLike):
        raise ValidationError("images", "must be a list of images, not a single one")
    images = []
    for index, value in enumerate(values):
        if isinstance(value, Image):
            images.append(value)
        elif isinstance(value, bytes | bytearray):
            images.append(Image(bytes(value), f"image{index}"))
        elif isinstance(value, str | os.PathLike):
            path = Path(value)
            try:
                images.append(Image(path.read_bytes(), path.stem))
            except OSError as exc:
                raise ValidationError("images", f"{path}: {exc.strerror or exc}") from None
        else:
            raise ValidationError(
                "images",
                f"item {index} must be an Image, bytes or a file path, got {type(value).__name__}",
            )
    return tuple(images)


def _check_key(key: str | None) -> str:
    if key is None or key == "":
        return ""
    if len(key) > MAX_KEY_CHARS or any(c.isspace() for c in key):
        raise ValidationError("key", f"must be 1-{MAX_KEY_CHARS} characters without spaces")
    return key


def _content_key(request: SignRequest) -> str:
    parts = [request.sign, request.type, request.remark, [i.sha256 for i in request.images]]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()[:32]
