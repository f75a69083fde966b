"""The user's own CSV, TSV, JSONL, JSON or Parquet files, read through a column mapping."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seawall.data.dataset import Dataset
from seawall.data.labels import parse_label
from seawall.data.readers import is_missing, read_json_array, read_jsonl, read_parquet, read_table
from seawall.data.records import PromptRecord, ResponseRecord
from seawall.errors import DataError


@dataclass(frozen=True)
class ColumnMap:
    """Which column holds what; `response=None` reads prompts, `label=None` leaves labels unknown."""

    prompt: str = "prompt"
    response: str | None = "response"
    label: str | None = "label"
    category: str | None = None
    id: str | None = None
    harmful: str | None = None


def _read(path: Path, required: list[str]) -> tuple[list[dict[str, Any]], Any]:
    suffix = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffix in (".csv", ".csv.gz"):
        return read_table(path, required=required)
    if suffix in (".tsv", ".tsv.gz"):
        return read_table(path, required=required, delimiter="\t")
    if suffix in (".jsonl", ".jsonl.gz", ".ndjson"):
        return read_jsonl(path, required=required)
    if suffix == ".json":
        return read_json_array(path, required=required)
    if suffix == ".parquet":
        return read_parquet(path, required=required)
    raise DataError(f"{path}: unsupported file type {suffix!r}; use .csv, .tsv, .jsonl, .json or .parquet")


def load_file(path: str | Path, columns: ColumnMap | None = None) -> Dataset:
    """Load a user file as response records (when it has a response column) or prompt records."""
    path = Path(path)
    columns = columns or ColumnMap()
    has_responses = columns.response is not None
    required = [c for c in (columns.prompt, columns.response, columns.id) if c]
    rows, report = _read(path, required)
    if columns.label and rows and columns.label not in rows[0]:
        if has_responses and columns.label != "label":
            raise DataError(f"{path}: missing label column {columns.label!r}")
        columns = ColumnMap(
            columns.prompt, columns.response, None, columns.category, columns.id, columns.harmful
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
        if has_responses:
            response = row[columns.response]
            response = "" if is_missing(response) else str(response)
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
