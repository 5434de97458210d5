"""Reading the files people hand signq (onboarding rows, accounts, sign ids): UTF-8 text, CSV.

A file that cannot be read is one ``FileProblem`` naming the file and, where it has one, the
line: never a ``UnicodeDecodeError`` or a ``csv.Error`` with no place.
"""

from __future__ import annotations

import csv
from pathlib import Path

from worker.errors import FileProblem

# Large enough for any real row (an onboarding remark is 100 characters), small enough that a
# malformed file cannot make a reader hold much.
MAX_FIELD_CHARS = 64 * 1024


def read_text(path: Path) -> str:
    """A UTF-8 text file's content (a byte-order mark is dropped)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise FileProblem(f"{path}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise FileProblem(
            f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        ) from None


def csv_rows(
    path: Path, required: set[str], allowed: set[str] | None = None
) -> list[tuple[int, dict[str, str]]]:
    """A CSV file's rows with their line numbers; the header must name every ``required``
    column (and, given ``allowed``, no other). A row with more values than columns, or a
    field past ``MAX_FIELD_CHARS``, is a problem naming its line."""
    reader = csv.DictReader(read_text(path).splitlines(), restkey="\0extra")
    try:
        header = set(reader.fieldnames or [])
    except csv.Error as exc:
        raise FileProblem(f"{path}:1: {exc}") from None
    missing = required - header
    if missing:
        raise FileProblem(f"{path}: missing column(s) {', '.join(sorted(missing))}")
    unknown = header - allowed if allowed is not None else set()
    if unknown:
        raise FileProblem(f"{path}: unknown column(s) {', '.join(sorted(unknown))}")
    rows = []
    line = 1
    try:
        for row in reader:
            line = reader.line_num
            if "\0extra" in row:
                raise FileProblem(f"{path}:{line}: more values than the header has columns")
            values = {k: v or "" for k, v in row.items()}
            if any(len(v) > MAX_FIELD_CHARS for v in values.values()):
                raise FileProblem(
                    f"{path}:{line}: a field longer than {MAX_FIELD_CHARS} characters"
                )
            rows.append((line, values))
    except csv.Error as exc:
        raise FileProblem(f"{path}:{line + 1}: {exc}") from None
    return rows
