"""`signq submit`, `signq jobs` and `signq onboard`: producing jobs and settling them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from worker.cli.common import CliError, iso, runtime
from worker.errors import RowsRefused
from worker.jsms.models import Image
from worker.records import JobRecord, Submitted
from worker.settings import Settings


def submit(args: argparse.Namespace, settings: Settings) -> int:
    """`signq submit create|modify|delete|query ...`: prints the job id."""
    rt = runtime(settings)
    if args.op in ("create", "modify"):
        images = tuple(_image(Path(p)) for p in args.image or ())
        fields: dict[str, Any] = {
            "images": images,
            "type": args.type,
            "remark": args.remark,
            "key": args.key,
        }
        if args.op == "create":
            result = rt.jobs.create(args.account, args.sign, **fields)
        else:
            result = rt.jobs.modify(args.account, args.sign_id, args.sign, **fields)
    elif args.op == "delete":
        result = rt.jobs.delete(args.account, args.sign_id, key=args.key)
    else:
        result = rt.jobs.query(args.account, args.sign_id, key=args.key)
    _print_submitted(result, as_json=args.json)
    return 0


def jobs_show(args: argparse.Namespace, settings: Settings) -> int:
    """`signq jobs show ID`."""
    record = _job(settings, args.job_id)
    if args.json:
        print(json.dumps(record.to_dict(), ensure_ascii=False))
        return 0
    for key, value in record.to_dict().items():
        if value not in (None, [], False):
            shown = json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else value
            if key.endswith("_at") and isinstance(value, int):
                shown = iso(value)
            print(f"{key:12} {shown}")
    return 0


def jobs_list(args: argparse.Namespace, settings: Settings) -> int:
    """`signq jobs list [--state S] [--account A]`."""
    records = runtime(settings).jobs.find(state=args.state, account=args.account, limit=args.limit)
    for record in records:
        if args.json:
            print(json.dumps(record.to_dict(), ensure_ascii=False))
        else:
            print(_line(record))
    return 0


def jobs_action(args: argparse.Namespace, settings: Settings) -> int:
    """`signq jobs cancel|abandon|confirm ID`."""
    rt = runtime(settings)
    if args.action == "confirm":
        rt.tracker.confirm_checked(args.job_id, args.sign_id)
    elif args.action == "retry":
        print(f"job {args.job_id}: {rt.jobs.retry(args.job_id)}")
        return 0
    elif args.action == "abandon":
        rt.jobs.abandon(args.job_id)
    else:
        rt.jobs.cancel(args.job_id)
    done = {"cancel": "cancelled", "abandon": "abandoned", "confirm": "confirmed"}
    print(f"job {args.job_id}: {done[args.action]}")
    return 0


def _image(path: Path) -> Image:
    try:
        return Image(path.read_bytes(), path.stem)
    except OSError as exc:
        raise CliError(f"--image {path}: {exc.strerror}") from None


def _job(settings: Settings, job_id: str) -> JobRecord:
    return runtime(settings).jobs.require(job_id)


def _print_submitted(result: Submitted, *, as_json: bool) -> None:
    if as_json:
        print(
            json.dumps(
                {"job_id": result.job_id, "state": result.state, "duplicate": result.duplicate}
            )
        )
    else:
        note = " (already submitted)" if result.duplicate else ""
        print(f"{result.job_id} {result.state}{note}")


def _line(record: JobRecord) -> str:
    what = record.sign or (f"sign_id={record.sign_id}" if record.sign_id else "")
    error = f" — {record.error.get('message')}" if record.error else ""
    return f"{record.id} {record.op:6} {record.account:20} {record.state:13} {what}{error}"


def onboard(args: argparse.Namespace, settings: Settings) -> int:
    """`signq onboard FILE`: check every row, enqueue the good ones, optionally wait; with
    --strict, any bad row refuses the whole file (each named, nothing enqueued)."""
    try:
        return _onboard(args, settings)
    except RowsRefused as exc:
        for line, reason in exc.problems:
            print(f"{args.file}:{line}: {reason}", file=sys.stderr)
        raise CliError(f"{exc} (--strict)") from None


def _onboard(args: argparse.Namespace, settings: Settings) -> int:
    from worker import onboarding  # noqa: PLC0415

    rt = runtime(settings)
    live = sys.stdout.isatty()
    if live:
        from rich.progress import Progress  # noqa: PLC0415

        with Progress(transient=True) as bar:
            task = bar.add_task("enqueueing", total=None)

            def advance(total: int, done: list[Any]) -> None:
                bar.update(task, total=total, advance=len(done))

            report = onboarding.onboard(Path(args.file), rt, strict=args.strict, progress=advance)
    else:

        def lines(_total: int, done: list[Any]) -> None:
            for row, result in done:
                if isinstance(result, Exception):
                    continue
                print(
                    json.dumps(
                        {
                            "line": row.line,
                            "job_id": result.job_id,
                            "state": result.state,
                            "duplicate": result.duplicate,
                        }
                    )
                )

        report = onboarding.onboard(Path(args.file), rt, strict=args.strict, progress=lines)
    for bad in report.bad:
        print(f"{args.file}:{bad.line}: {bad.reason}", file=sys.stderr)
    print(
        f"{report.rows} row(s): {report.enqueued} enqueued, {report.duplicates} already "
        f"submitted, {len(report.bad)} bad",
        file=sys.stderr,
    )
    if not args.wait:
        return 1 if report.bad else 0
    tally = onboarding.wait(rt, list(report.jobs.values()), on_tally=_tally_printer(live))
    print(json.dumps({"final": dict(tally)}), file=sys.stderr)
    return 1 if report.bad or tally.get("failed") else 0


def _tally_printer(live: bool) -> Any:
    last: list[str] = []

    def show(tally: Any) -> None:
        line = ", ".join(f"{state}: {n}" for state, n in sorted(tally.items()))
        if line != (last[0] if last else None):
            last[:] = [line]
            print(line if live else json.dumps({"tally": dict(tally)}), file=sys.stderr)

    return show
