"""The user's own CSV, TSV, JSONL, JSON or Parquet files, read through a column mapping."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from seawall.data.dataset import Dataset
from seawall.data.labels import parse_label
from seawall.data.readers import is_missing, read_json_array, read_jsonl, read_parquet, read_table
from seawall.data.records import PromptRecord, ResponseRecord
from seawall.errors import DataError

# A column left at its default name may be absent (no labels, no categories); a column the user named must exist.
DEFAULT_LABEL_COLUMN = "label"
DEFAULT_CATEGORY_COLUMN = "category"


@dataclass(frozen=True)
class ColumnMap:
    """Which column holds what; `response=None` reads prompts, `label=None` leaves labels unknown."""

    prompt: str = "prompt"
    response: str | None = "response"
    label: str | None = DEFAULT_LABEL_COLUMN
    category: str | None = DEFAULT_CATEGORY_COLUMN
    id: str | None = None
    harmful: str | None = None


READERS = {
    ".csv": lambda path, required: read_table(path, required=required),
    ".csv.gz": lambda path, required: read_table(path, required=required),
    ".tsv": lambda path, required: read_table(path, required=required, delimiter="\t"),
    ".tsv.gz": lambda path, required: read_table(path, required=required, delimiter="\t"),
    ".jsonl": read_jsonl,
    ".jsonl.gz": read_jsonl,
    ".ndjson": read_jsonl,
    ".json": read_json_array,
    ".parquet": read_parquet,
}


def file_type(path: str | Path) -> str:
    """The suffix that picks a user file's reader: `.csv`, `.tsv.gz`, `.parquet`…"""
    path = Path(path)
    return "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()


def is_user_file(spec: str | Path) -> bool:
    """True when `spec` names a user file rather than a dataset: an existing file or a readable file type."""
    return Path(spec).is_file() or file_type(spec) in READERS


def _read(path: Path, required: list[str]) -> tuple[list[dict[str, Any]], Any]:
    reader = READERS.get(file_type(path))
    if reader is None:
        raise DataError(
            f"{path}: unsupported file type {file_type(path)!r}; use .csv, .tsv, .jsonl, .json or .parquet"
        )
    return reader(path, required)


def _optional_column(path: Path, rows: list[dict[str, Any]], column: str | None, default: str) -> str | None:
    """`column` if the file has it; None if it is absent under its default name; an error if the user named it."""
    if column is None or not rows or column in rows[0]:
        return column
    if column != default:
        raise DataError(f"{path}: missing column {column!r}; found {[c for c in rows[0] if c != '__line__']}")
    return None


def load_file(path: str | Path, columns: ColumnMap | None = None) -> Dataset:
    """Load a user file as response records (when it has a response column) or prompt records."""
    path = Path(path)
    columns = columns or ColumnMap()
    has_responses = columns.response is not None
    required = [c for c in (columns.prompt, columns.response, columns.id) if c]
    rows, report = _read(path, required)
    columns = replace(
        columns,
        label=_optional_column(path, rows, columns.label, DEFAULT_LABEL_COLUMN) if has_responses else None,
        category=_optional_column(path, rows, columns.category, DEFAULT_CATEGORY_COLUMN),
    )
    records: list[ResponseRecord | PromptRecord] = []
    for index, row in enumerate(rows, start=1):
        where = f"{path}, row {row['__line__']}"
        prompt = row[columns.prompt]
        if is_missing(prompt):
            report.skipped["missing prompt"] += 1
            continue
        record_id = str(row[columns.id]) if columns.id else f"{path.stem}-{index:06d}"
        category = row.get(columns.category) if columns.category else None
        category = None if is_missing(category) else str(category)
        if has_responses:
            response = row[columns.response]
            if is_missing(response):
                # An empty answer is a real case (a model that said nothing); it is kept and counted.
                report.add_repair({"missing response read as empty"})
                response = ""
            response = str(response)
            label = (
                parse_label(row.get(columns.label), f"{where}, column {columns.label}", allow_missing=True)
                if columns.label
                else "unknown"
            )
            records.append(
                ResponseRecord(
                    id=record_id,
                    prompt=str(prompt),
                    response=response,
                    label=label,
                    category=category,
                    source=path.name,
                )
            )
        else:
            harmful = True
            if columns.harmful:
                harmful = (
                    parse_label(row.get(columns.harmful), f"{where}, column {columns.harmful}") == "unsafe"
                )
            records.append(
                PromptRecord(
                    id=record_id, prompt=str(prompt), harmful=harmful, category=category, source=path.name
                )
            )
    return Dataset(path.stem, records, report)
