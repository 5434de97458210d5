"""`signq onboard`: every row checked first, bad rows named by line, re-runs enqueue nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.helpers import PNG
from tests.system import System, dramatiq_system
from worker import onboarding
from worker.emulator import EmulatorAdmin, EmulatorServer
from worker.testing import run_cli


def write_csv(tmp_path: Path, account: str, *, bad: bool = False) -> Path:
    """A CSV of four rows (one bad when asked), with an image beside it."""
    (tmp_path / "logo.png").write_bytes(PNG)
    (tmp_path / "fake.png").write_bytes(b"not a png")
    rows = [
        "account,sign,type,remark,images,key",
        f"{account},极光推送,1,营业执照,logo.png,row-1",
        f"{account},极光短信,,,,",
        f"{account},Acme2024,3,,logo.png;logo.png,",
    ]
    if bad:
        rows += [
            f"{account},【坏的】,,,,",
            "nobody,好的,,,,",
            f"{account},图片坏,,,fake.png,",
            f"{account},缺图片,,,missing.png,",
            f"{account},类型错,9,,,",
        ]
    path = tmp_path / "tenants.csv"
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_good_file_is_enqueued_and_a_rerun_enqueues_nothing(system: System, tmp_path: Path) -> None:
    """Three rows, three jobs; the same file again gives the same jobs and enqueues nothing."""
    account = system.tenant()
    path = write_csv(tmp_path, account)
    first = onboarding.onboard(path, system.runtime)
    assert (first.rows, first.enqueued, first.duplicates, first.bad) == (3, 3, 0, [])
    sent = list(system.sent)
    again = onboarding.onboard(path, system.runtime)
    assert (again.enqueued, again.duplicates) == (0, 3)
    assert again.jobs == first.jobs
    assert system.sent == sent
    record = system.runtime.jobs.require(first.jobs[2])
    assert (record.sign, record.type, record.remark, record.key) == (
        "极光推送",
        1,
        "营业执照",
        "row-1",
    )


def test_rerun_after_the_jobs_finished_still_enqueues_nothing(
    system: System, tmp_path: Path
) -> None:
    """Keys outlive the jobs: a file re-run after everything finished is still a no-op."""
    account = system.tenant()
    path = write_csv(tmp_path, account)
    report = onboarding.onboard(path, system.runtime)
    for job_id in report.jobs.values():
        system.runtime.jobs.cancel(job_id)
    again = onboarding.onboard(path, system.runtime)
    assert (again.enqueued, again.duplicates) == (0, 3)


def test_bad_rows_are_reported_by_line_and_the_rest_go_through(
    system: System, tmp_path: Path
) -> None:
    """Each bad row is named with its line and reason; good rows are still enqueued."""
    account = system.tenant()
    report = onboarding.onboard(write_csv(tmp_path, account, bad=True), system.runtime)
    assert report.enqueued == 3
    reasons = {bad.line: bad.reason for bad in report.bad}
    assert sorted(reasons) == [5, 6, 7, 8, 9]
    assert reasons[5].startswith("sign: may hold only")
    assert "no account named 'nobody'" in reasons[6]
    assert "not a PNG or JPEG" in reasons[7]
    assert "missing.png" in reasons[8]
    assert reasons[9].startswith("type:")


def test_strict_enqueues_nothing_when_any_row_is_bad(system: System, tmp_path: Path) -> None:
    """--strict aborts the whole file."""
    account = system.tenant()
    with pytest.raises(onboarding.OnboardError, match="5 bad row"):
        onboarding.onboard(write_csv(tmp_path, account, bad=True), system.runtime, strict=True)
    assert system.runtime.jobs.find(account=account) == []


def test_jsonl_rows_with_image_lists(system: System, tmp_path: Path) -> None:
    """JSONL rows take images as a list; a line that is not JSON is a bad row."""
    account = system.tenant()
    (tmp_path / "logo.png").write_bytes(PNG)
    path = tmp_path / "rows.jsonl"
    path.write_text(
        "\n".join(
            [
                json.dumps({"account": account, "sign": "第一个", "images": ["logo.png"]}),
                "{not json",
                json.dumps({"account": account, "sign": "第二个", "type": 2, "key": "k2"}),
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    report = onboarding.onboard(path, system.runtime)
    assert report.enqueued == 2
    assert [(b.line, b.reason) for b in report.bad] == [(2, "row: not valid JSON")]


def test_wrong_columns_are_refused(system: System, tmp_path: Path) -> None:
    """A CSV without account and sign, or with unknown columns, is refused as a whole."""
    path = tmp_path / "x.csv"
    path.write_text("name,text\na,b\n")
    with pytest.raises(onboarding.OnboardError, match="missing column"):
        onboarding.onboard(path, system.runtime)
    path.write_text("account,sign,colour\na,b,c\n")
    with pytest.raises(onboarding.OnboardError, match="unknown column"):
        onboarding.onboard(path, system.runtime)


def test_cli_reports_lines_and_prints_json_lines(system: System, tmp_path: Path) -> None:
    """The command prints one JSON line per enqueued row, bad rows with file:line on stderr,
    and exits 1 when a row was bad."""
    account = system.tenant()
    path = write_csv(tmp_path, account, bad=True)
    env = {**os.environ, "SIGNQ_PREFIX": system.settings.prefix}
    result = run_cli(["onboard", str(path)], env=env)
    assert result.returncode == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in rows] == [2, 3, 4]
    assert f"{path}:5: sign: may hold only" in result.stderr
    assert "8 row(s): 3 enqueued, 0 already submitted, 5 bad" in result.stderr


def test_cli_strict_names_every_bad_row_and_enqueues_nothing(
    system: System, tmp_path: Path
) -> None:
    """`signq onboard --strict` with bad rows: each named by file and line, then one line that
    nothing was enqueued, exit 2, and no job made."""
    account = system.tenant()
    path = write_csv(tmp_path, account, bad=True)
    env = {**os.environ, "SIGNQ_PREFIX": system.settings.prefix}
    result = run_cli(["onboard", "--strict", str(path)], env=env)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert [line.split(": ")[0] for line in lines[:5]] == [f"{path}:{n}" for n in range(5, 10)]
    assert lines[5] == "signq: 5 bad row(s); nothing was enqueued (--strict)"
    assert "Traceback" not in result.stderr
    assert system.runtime.jobs.find(account=account) == []


@pytest.mark.slow
def test_wait_follows_every_row_to_its_end(
    emulator_server: EmulatorServer, admin: EmulatorAdmin, tmp_path: Path
) -> None:
    """With real workers and the scheduler, --wait's tally ends with every row finished."""
    import threading  # noqa: PLC0415

    with dramatiq_system(emulator_server, admin) as system:
        stop = threading.Event()
        scheduler = threading.Thread(target=system.runtime.scheduler().run, args=(stop,))
        scheduler.start()
        try:
            accounts = [system.tenant(audit_delay=0.1) for _ in range(3)]
            lines = ["account,sign"] + [f"{a},签名{n}PASS" for a in accounts for n in range(3)]
            path = tmp_path / "wait.csv"
            path.write_text("\n".join(lines) + "\n", encoding="utf-8")
            report = onboarding.onboard(path, system.runtime)
            tallies = []
            final = onboarding.wait(
                system.runtime,
                list(report.jobs.values()),
                on_tally=tallies.append,
                poll_seconds=0.1,
                timeout=30,
            )
        finally:
            stop.set()
            scheduler.join(timeout=10)
        assert final == {"approved": 9}
        assert len(tallies) > 1
