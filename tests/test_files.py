"""Files people hand signq: one clear error naming the file and line, never a traceback."""

from __future__ import annotations

import string
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.system import System
from worker import cli, onboarding
from worker.errors import FileProblem
from worker.files import MAX_FIELD_CHARS, csv_rows, read_text

T = TypeVar("T")
LATIN1 = "account,sign\nacme,café\n".encode("latin-1")


@pytest.mark.parametrize(
    ("argv", "name", "content"),
    [
        (["onboard", "{path}"], "rows.csv", LATIN1),
        (
            ["track", "--file", "{path}"],
            "ids.csv",
            b"account,sign_id\nacme,1\n\xe9\n",
        ),
        (
            ["accounts", "import", "{path}"],
            "accounts.csv",
            b"account,app_key,master_secret\n\xff\n",
        ),
    ],
)
def test_a_file_that_is_not_utf8_is_one_line_naming_it(
    argv: list[str],
    name: str,
    content: bytes,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    system: System,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Latin-1 and other bytes: exit 2, the file and line named, nothing imported."""
    monkeypatch.setenv("SIGNQ_PREFIX", system.settings.prefix)
    path = tmp_path / name
    path.write_bytes(content)
    assert cli.main([a.replace("{path}", str(path)) for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"signq: {path}:")
    assert "not UTF-8 text" in err
    assert len(err.splitlines()) == 1


def test_a_byte_order_mark_crlf_and_missing_values_read_cleanly(tmp_path: Path) -> None:
    """What spreadsheets write (a BOM, CRLF line ends, empty trailing cells) is read as meant."""
    path = tmp_path / "rows.csv"
    path.write_bytes("\ufeffaccount,sign,remark\r\nacme,极光\r\nbeta,推送,备注\r\n".encode())
    rows = csv_rows(path, {"account", "sign"})
    assert rows == [
        (2, {"account": "acme", "sign": "极光", "remark": ""}),
        (3, {"account": "beta", "sign": "推送", "remark": "备注"}),
    ]


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("account,sign\nacme,a,extra\n", ":2: more values than the header has columns"),
        ("sign\nx\n", "missing column(s) account"),
        ("account,sign,colour\n", "unknown column(s) colour"),
        (f"account,sign\nacme,{'x' * (MAX_FIELD_CHARS + 1)}\n", ":2: a field longer than"),
        ('account,sign\nacme,"unterminated\n' + "x" * (200 * 1024), ":"),
    ],
)
def test_malformed_csv_is_named_by_line(tmp_path: Path, content: str, says: str) -> None:
    """Extra values, missing or unknown columns, huge fields: a FileProblem naming the place."""
    path = tmp_path / "rows.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(FileProblem, match=str(path)) as raised:
        csv_rows(path, {"account", "sign"}, {"account", "sign", "remark"})
    assert says in str(raised.value)


def outcome(call: Callable[[], T]) -> T | FileProblem:
    """What a reader gave: its value, or the FileProblem it raised."""
    try:
        return call()
    except FileProblem as exc:
        return exc


@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=400))
def test_any_bytes_give_rows_or_a_file_problem(tmp_path: Path, data: bytes) -> None:
    """Whatever the bytes, the reader answers with rows or one FileProblem; nothing else."""
    path = tmp_path / "any.csv"
    path.write_bytes(b"account,sign\n" + data)
    result = outcome(lambda: csv_rows(path, {"account", "sign"}))
    if isinstance(result, FileProblem):
        assert str(result).startswith(str(path))
    else:
        assert all(isinstance(line, int) and line >= 2 for line, _ in result)


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200), encoding=st.sampled_from(["utf-8", "utf-8-sig", "latin-1"]))
def test_read_text_decodes_utf8_or_names_the_line(tmp_path: Path, text: str, encoding: str) -> None:
    """UTF-8 (with or without BOM) comes back as written; anything else is a named line."""
    path = tmp_path / "t.txt"
    try:
        path.write_bytes(text.encode(encoding))
    except UnicodeEncodeError:
        return
    result = outcome(lambda: read_text(path))
    if isinstance(result, FileProblem):
        assert encoding == "latin-1"
        assert str(result).startswith(f"{path}:")
    elif encoding != "latin-1":
        assert result == (text[1:] if text.startswith("\ufeff") and encoding == "utf-8" else text)


def test_two_rows_with_one_key_and_different_content_conflict(
    system: System, tmp_path: Path
) -> None:
    """The second row is refused, naming the line that used the key first; the first goes."""
    account = system.tenant()
    path = tmp_path / "rows.csv"
    path.write_text(
        f"account,sign,key\n{account},第一,k1\n{account},第二,k1\n{account},第一,k1\n",
        encoding="utf-8",
    )
    report = onboarding.onboard(path, system.runtime)
    assert report.enqueued == 1
    assert report.duplicates == 1
    (bad,) = report.bad
    assert bad.line == 3
    assert "already used on line 2" in bad.reason


def test_ascii_printable_account_names_round_trip(tmp_path: Path) -> None:
    """Every printable ASCII character but the delimiter survives as written."""
    path = tmp_path / "rows.csv"
    name = "".join(c for c in string.ascii_letters + string.digits + "_.-")
    path.write_text(f"account,sign\n{name},签名\n", encoding="utf-8")
    assert csv_rows(path, {"account", "sign"})[0][1]["account"] == name
