"""Bulk onboarding from a CSV or JSONL file: every row checked first, then pipelined submission.

Rows: ``account, sign, type, remark, images, key``. ``images`` are paths (relative to the file;
``;``-separated in CSV, a list in JSONL). A row without a key gets one derived from its content,
so re-running the same file enqueues nothing new, even after its jobs finished. Images are read
to check them and read again when their batch is submitted, so a large file never holds all its
images in memory.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from worker.errors import FileProblem, OnboardError, RowsRefused
from worker.files import csv_rows, read_text
from worker.jsms.errors import ValidationError
from worker.jsms.models import Image, SignRequest, validate_request
from worker.records import TERMINAL, JobSpec, Submitted
from worker.runtime import Runtime
from worker.store import text

BATCH = 500
COLUMNS = ("account", "sign", "type", "remark", "images", "key")


@dataclass(frozen=True)
class Row:
    """A checked row: its line and what to submit (image paths, not bytes)."""

    line: int
    account: str
    sign: str
    type: int | None
    remark: str | None
    images: tuple[Path, ...]
    key: str


@dataclass(frozen=True)
class BadRow:
    """A row that will not be enqueued, and why."""

    line: int
    reason: str


@dataclass
class Report:
    """What onboarding did."""

    rows: int = 0
    enqueued: int = 0
    duplicates: int = 0
    bad: list[BadRow] = field(default_factory=list)
    jobs: dict[int, str] = field(default_factory=dict)


def read(path: Path, runtime: Runtime) -> tuple[list[Row], list[BadRow]]:
    """Parse and check every row; nothing is written."""
    known = {a.name for a in runtime.accounts.all()}
    rows, bad = [], []
    limit = runtime.settings.max_image_bytes
    keys: dict[tuple[str, str], Row] = {}
    for line, raw in _records(path):
        try:
            row = _row(line, raw, path.parent, known, limit)
        except ValidationError as exc:
            bad.append(BadRow(line, str(exc)))
            continue
        first = keys.setdefault((row.account, row.key), row)
        if first is not row and _content(first) != _content(row):
            bad.append(
                BadRow(
                    line,
                    f"key: {row.key!r} is already used on line {first.line} for other content; "
                    "give this row its own key",
                )
            )
            continue
        rows.append(row)
    return rows, bad


def _content(row: Row) -> tuple[object, ...]:
    return (row.sign, row.type, row.remark, row.images)


def onboard(
    path: Path,
    runtime: Runtime,
    *,
    strict: bool = False,
    progress: Callable[[int, list[tuple[Row, Submitted | Exception]]], None] | None = None,
) -> Report:
    """Check the whole file, then submit the good rows in pipelined batches."""
    rows, bad = read(path, runtime)
    report = Report(rows=len(rows) + len(bad), bad=bad)
    if strict and bad:
        raise RowsRefused([(b.line, b.reason) for b in bad])
    for start in range(0, len(rows), BATCH):
        batch = rows[start : start + BATCH]
        results = runtime.jobs.submit_many([_spec(row) for row in batch])
        done = []
        for row, result in zip(batch, results, strict=True):
            if isinstance(result, Submitted):
                report.jobs[row.line] = result.job_id
                if result.duplicate:
                    report.duplicates += 1
                else:
                    report.enqueued += 1
            else:
                report.bad.append(BadRow(row.line, str(result)))
            done.append((row, result))
        if progress is not None:
            progress(len(rows), done)
    report.bad.sort(key=lambda b: b.line)
    return report


def wait(
    runtime: Runtime,
    job_ids: list[str],
    *,
    on_tally: Callable[[Counter[str]], None],
    poll_seconds: float = 0.5,
    timeout: float | None = None,
) -> Counter[str]:
    """Follow the jobs until each is finished; returns the final count by state."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        tally = states(runtime, job_ids)
        on_tally(tally)
        if all(state in TERMINAL for state in tally):
            return tally
        if deadline is not None and time.monotonic() > deadline:
            return tally
        time.sleep(poll_seconds)


def states(runtime: Runtime, job_ids: list[str]) -> Counter[str]:
    """How many of the jobs are in each state (pipelined reads)."""
    tally: Counter[str] = Counter()
    keys = runtime.store.keys
    for start in range(0, len(job_ids), 1000):
        pipe = runtime.store.redis.pipeline(transaction=False)
        for job_id in job_ids[start : start + 1000]:
            pipe.hget(keys.job(job_id), "state")
        tally.update(text(s) or "expired" for s in pipe.execute())
    return tally


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    try:
        if path.suffix.lower() not in (".jsonl", ".ndjson"):
            yield from csv_rows(path, {"account", "sign"}, set(COLUMNS))
            return
        content = read_text(path)
    except FileProblem as exc:
        raise OnboardError(str(exc)) from None
    for line, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except ValueError:
            yield line, {"__error__": "not valid JSON"}
            continue
        yield line, record if isinstance(record, dict) else {"__error__": "not an object"}


def _row(line: int, raw: dict[str, Any], base: Path, known: set[str], limit: int) -> Row:
    if "__error__" in raw:
        raise ValidationError("row", raw["__error__"])
    account = str(raw.get("account") or "").strip()
    if not account:
        raise ValidationError("account", "is required")
    if account not in known:
        raise ValidationError("account", f"no account named {account!r}")
    paths = _paths(raw.get("images"), base)
    images = []
    for image_path in paths:
        try:
            images.append(Image(image_path.read_bytes(), image_path.stem))
        except OSError as exc:
            raise ValidationError("images", f"{image_path}: {exc.strerror}") from None
    request = validate_request(
        SignRequest(
            str(raw.get("sign") or ""),
            tuple(images),
            raw.get("type") or None,
            raw.get("remark") or None,
        ),
        limit,
    )
    key = str(raw.get("key") or "").strip()
    if not key:
        digest = hashlib.sha256(
            json.dumps(
                [
                    account,
                    request.sign,
                    request.type,
                    request.remark,
                    [i.sha256 for i in request.images],
                ],
                ensure_ascii=False,
            ).encode()
        ).hexdigest()[:32]
        key = f"onboard-{digest}"
    return Row(line, account, request.sign, request.type, request.remark, paths, key)


def _paths(value: Any, base: Path) -> tuple[Path, ...]:
    if not value:
        return ()
    items = value if isinstance(value, list) else str(value).split(";")
    return tuple((base / str(item).strip()) for item in items if str(item).strip())


def _spec(row: Row) -> JobSpec:
    images = tuple(Image(p.read_bytes(), p.stem) for p in row.images)
    request = SignRequest(row.sign, images, row.type, row.remark)
    return JobSpec("create", row.account, request=request, key=row.key)
