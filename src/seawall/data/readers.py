"""Tolerant file readers: decode row by row, repair what can be repaired, count it, and fail clearly otherwise."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seawall.errors import DataError

csv.field_size_limit(1 << 28)


@dataclass
class ReadReport:
    """What a reader saw: rows read, rows repaired (and why), rows skipped (and why)."""

    rows: int = 0
    repaired_rows: int = 0
    repaired: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)

    def add_repair(self, reasons: set[str]) -> None:
        """Count one repaired row, and each reason it was repaired for."""
        if reasons:
            self.repaired_rows += 1
            self.repaired.update(reasons)

    def merge(self, other: ReadReport) -> None:
        """Add another file's counts to this report."""
        self.rows += other.rows
        self.repaired_rows += other.repaired_rows
        self.repaired.update(other.repaired)
        self.skipped.update(other.skipped)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "repaired_rows": self.repaired_rows,
            "repaired": dict(self.repaired),
            "skipped_rows": self.skipped.total(),
            "skipped": dict(self.skipped),
        }


def _repair_field(value: str) -> tuple[str, str | None]:
    """Replace undecodable bytes (surrogate escapes) by U+FFFD and drop NULs; return the reason if anything changed."""
    reason = None
    if any(0xDC80 <= ord(ch) <= 0xDCFF for ch in value):
        value = "".join("\ufffd" if 0xDC80 <= ord(ch) <= 0xDCFF else ch for ch in value)
        reason = "invalid utf-8 bytes"
    if "\x00" in value:
        value = value.replace("\x00", "")
        reason = reason or "nul characters"
    return value, reason


def _decode(path: Path) -> str:
    """The file's text, with invalid bytes kept as surrogate escapes; a missing or empty file is an error."""
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    # surrogateescape keeps every invalid byte addressable so that repairs are counted per row, not per file.
    text = raw.decode("utf-8", errors="surrogateescape")
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def read_table(
    path: str | Path,
    required: Sequence[str] = (),
    delimiter: str = ",",
    header: Sequence[str] | None = None,
) -> tuple[list[dict[str, str]], ReadReport]:
    """Read a CSV/TSV file into dicts, repairing bad bytes; `header` names the columns of a header-less file."""
    path = Path(path)
    text = _decode(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = list(header) if header is not None else next(reader)
    columns = [c.strip() for c in columns]
    missing = [c for c in required if c not in columns]
    if missing:
        hint = ""
        if len(columns) == 1 and (("\t" in columns[0]) or ("," in columns[0]) or (";" in columns[0])):
            hint = f" (the header is one column {columns[0][:60]!r}: wrong delimiter? expected {delimiter!r})"
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {columns}{hint}")
    report = ReadReport()
    rows: list[dict[str, str]] = []
    first_line = 1 if header is not None else 2
    for offset, values in enumerate(reader):
        line = first_line + offset
        if not values or (len(values) == 1 and not values[0].strip()):
            report.skipped["blank line"] += 1
            continue
        if len(values) != len(columns):
            raise DataError(
                f"{path}, row {line}: {len(values)} fields where the header has {len(columns)} ({columns})"
            )
        row: dict[str, str] = {"__line__": str(line)}
        reasons = set()
        for name, value in zip(columns, values, strict=True):
            fixed, reason = _repair_field(value)
            row[name] = fixed
            if reason:
                reasons.add(reason)
        report.add_repair(reasons)
        report.rows += 1
        rows.append(row)
    if not rows:
        raise DataError(f"{path}: no data rows after the header")
    return rows, report


def read_jsonl(path: str | Path, required: Sequence[str] = ()) -> tuple[list[dict[str, Any]], ReadReport]:
    """Read a JSON-lines file (optionally gzipped); a malformed line is an error naming its line number."""
    path = Path(path)
    text = _decode(path)
    report = ReadReport()
    rows: list[dict[str, Any]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            report.skipped["blank line"] += 1
            continue
        line, reason = _repair_field(line)
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(f"{path}, line {line_no}: invalid JSON ({error.msg})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{path}, line {line_no}: expected a JSON object, got {type(obj).__name__}")
        missing = [c for c in required if c not in obj]
        if missing:
            raise DataError(f"{path}, line {line_no}: missing field(s) {', '.join(missing)}")
        report.add_repair({reason} if reason else set())
        obj["__line__"] = line_no
        report.rows += 1
        rows.append(obj)
    return rows, report


def read_json_array(
    path: str | Path, required: Sequence[str] = ()
) -> tuple[list[dict[str, Any]], ReadReport]:
    """Read a JSON file holding a list of objects."""
    path = Path(path)
    text = _decode(path)
    text, reason = _repair_field(text)
    try:
        items = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(f"{path}: invalid JSON at line {error.lineno} ({error.msg})") from None
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON array of objects")
    report = ReadReport(rows=len(items))
    if reason:
        report.repaired[f"whole file: {reason}"] += 1
    for index, item in enumerate(items):
        missing = [c for c in required if c not in item]
        if missing:
            raise DataError(f"{path}, item {index}: missing field(s) {', '.join(missing)}")
        item["__line__"] = index
    return items, report


def read_parquet(path: str | Path, required: Sequence[str] = ()) -> tuple[list[dict[str, Any]], ReadReport]:
    """Read a Parquet file into dicts."""
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for corrupt files
        raise DataError(f"{path}: not a readable Parquet file ({error})") from None
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {table.column_names}")
    rows = table.to_pylist()
    for index, row in enumerate(rows):
        row["__line__"] = index
    return rows, ReadReport(rows=len(rows))


def is_missing(value: Any) -> bool:
    """True for None, NaN and blank strings."""
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()
