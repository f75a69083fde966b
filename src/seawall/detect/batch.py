"""Batch scoring and filtering of large files: stream rows in, score them in batches, write Parquet or JSONL out.

One pipeline, two engines. A `Source` cuts the input into *raw blocks* (Arrow tables holding each row's number and
either its raw JSON line or its Parquet columns); `score_block` turns a raw block into a *scored block* (id,
p_unsafe, unsafe, category, the bad-row reason); a writer appends scored blocks to the output in row order. The
local engine (`local_blocks`) runs the three in one process; the Ray engine (`seawall.detect.ray_engine`) runs
`score_block` in an actor pool on the same raw blocks, so both give the same rows, scores and bad-row report.

Reading streams: JSONL line by line and Parquet one record batch at a time, through pyarrow's filesystems (a local
path, file://, s3://, gs://, hdfs://…), so memory is bounded by a batch and one Parquet row group being written.
CSV, TSV and JSON files go through the data layer's readers (`seawall.data.readers`), which read a whole file;
registered datasets come from `seawall.data.load`.

Bad rows are counted, never dropped: an unreadable line, a missing or non-string response, a non-string prompt, a
missing id. Each keeps its place in the predictions (with `error` set); `filter` writes them to CLEAN.bad.jsonl.

Outputs are atomic: each is written to NAME.partial.EXT, fsync'd and renamed to NAME.EXT only once the whole input
has been scored, so OUT is either complete or not there (an old OUT is left as it was). When a batch fails (a
truncated file, a killed worker, Ctrl-C) the rows already scored are not lost: they stay in NAME.partial.EXT, whole
lines for JSONL, a readable file for Parquet (its footer is written on the way out), and the error says so.
"""

from __future__ import annotations

import io
import json
import math
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from seawall.errors import DataError, SeawallError

ROW = "__row__"  # the row's number in its input: JSONL/CSV line, 1-based Parquet/JSON/dataset position
RAW = "__raw__"  # a JSON row's bytes, exactly as read
ORIGINAL = (
    "__original__."  # prefix of the Parquet columns a scored block carries (a set may have its own "id")
)
REASON = "__reason__"  # why a row was not scored (BLANK or one of BAD_REASONS); null when it was
BLANK = "blank line"
BAD_REASONS = (
    "unreadable line",
    "missing response",
    "response not a string",
    "prompt not a string",
    "missing id",
)
LISTED_BAD_ROWS = 100  # bad rows listed one by one in a report (all of them are counted)
ROWS_PER_CHUNK = 10_000  # at most this many rows per Ray read task (a chunk), so a big input makes many
MAX_LINE_INDEX = 1 << 16  # byte offsets a JSONL scan keeps (every 2^k-th line: memory stays bounded)
PARQUET_ROW_GROUP = 16_384  # rows buffered before a Parquet row group is written
READ_BUFFER = 1 << 20
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class Columns:
    """Which field holds the prompt, the response and (optionally) the row's id."""

    prompt: str = "prompt"
    response: str = "response"
    id: str | None = None


@dataclass(frozen=True)
class DetectorSpec:
    """How each worker builds the same detector: its folder, then an operating point and backend parameters."""

    folder: str
    operating_point: str | None = None
    params: tuple[tuple[str, Any], ...] = ()

    def load(self) -> Any:
        """Load the detector from its folder and apply the operating point and parameters."""
        from seawall.detect.base import load_detector

        detector = load_detector(self.folder)
        if self.params:
            detector.set_params(**dict(self.params))
        if self.operating_point:
            detector.set_operating_point(self.operating_point)
        return detector


# ---- sources ---------------------------------------------------------------------------------------------------


def _filesystem(uri: str) -> tuple[Any, str]:
    """pyarrow's filesystem for a URI (s3://…, gs://…, file://…) or a local path, and the path inside it."""
    import pyarrow.fs as pafs

    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, OSError, ValueError) as error:
            raise DataError(f"{uri}: cannot open ({error})") from None
    return pafs.LocalFileSystem(), str(Path(uri).resolve())


def _check_exists(uri: str) -> None:
    import pyarrow.fs as pafs

    fs, path = _filesystem(uri)
    try:
        info = fs.get_file_info(path)
    except OSError as error:
        raise DataError(f"{uri}: cannot open ({error})") from None
    if info.type != pafs.FileType.File:
        raise DataError(f"{uri}: file not found")


def _raw_table(rows: list[int], lines: list[bytes]) -> pa.Table:
    return pa.table({ROW: pa.array(rows, pa.int64()), RAW: pa.array(lines, pa.binary())})


def chunk_rows(total: int, pieces: int, min_rows: int) -> int:
    """Rows per chunk that cut `total` rows into at least `pieces` chunks, each of `min_rows`..ROWS_PER_CHUNK rows."""
    return max(1, min_rows, min(ROWS_PER_CHUNK, math.ceil(total / max(1, pieces))))


class JsonlSource:
    """A JSON-lines file (optionally .gz), streamed line by line; each line is one row, numbered from 1."""

    kind = "json"

    def __init__(self, uri: str) -> None:
        self.uri = uri if "://" in uri else str(Path(uri).resolve())
        self.name = uri
        self.read_report: dict[str, Any] = {}
        _check_exists(uri)

    @property
    def compressed(self) -> bool:
        return self.uri.lower().endswith(".gz")

    def chunks(self, pieces: int = 1, min_rows: int = 1) -> list[dict[str, Any]]:
        """Line ranges for parallel readers: (byte offset, first line number, lines). With `pieces` > 1 the file is
        scanned once for line offsets; a .gz file cannot be entered mid-way and stays one chunk."""
        if pieces <= 1 or self.compressed:
            return [{"offset": 0, "first_row": 1, "rows": None}]
        offsets, step, total = self._line_index()
        size = max(step, round(chunk_rows(total, pieces, min_rows) / step) * step)
        return [
            {"offset": offsets[start // step], "first_row": start + 1, "rows": min(size, total - start)}
            for start in range(0, total, size)
        ]

    def _line_index(self) -> tuple[list[int], int, int]:
        """(byte offset of every step-th line, step, number of lines); the step doubles as the index fills up."""
        fs, path = _filesystem(self.uri)
        offsets, step, total, position = [0], 1, 0, 0
        with fs.open_input_stream(path) as raw:
            for line in io.BufferedReader(raw, READ_BUFFER):
                position += len(line)
                total += 1
                if total % step == 0:
                    offsets.append(position)
                if len(offsets) > MAX_LINE_INDEX:
                    offsets, step = offsets[::2], step * 2
        return offsets, step, total

    def read(self, chunk: dict[str, Any], batch_size: int, keep_original: bool = False) -> Iterator[pa.Table]:
        """Raw blocks of `batch_size` lines of a chunk: row = line number, raw = the line without its newline."""
        fs, path = _filesystem(self.uri)
        rows: list[int] = []
        lines: list[bytes] = []
        number, limit = chunk["first_row"] - 1, chunk["rows"]
        try:
            if self.compressed:
                raw = fs.open_input_stream(path, compression="detect")
            else:
                raw = fs.open_input_file(path)
                raw.seek(chunk["offset"])
            with raw:
                for line in io.BufferedReader(raw, READ_BUFFER):
                    number += 1
                    rows.append(number)
                    lines.append(line[:-1] if line.endswith(b"\n") else line)
                    if len(rows) >= batch_size:
                        yield _raw_table(rows, lines)
                        rows, lines = [], []
                    if limit is not None and number - chunk["first_row"] + 1 >= limit:
                        break
        except OSError as error:  # a truncated .gz, a dropped connection
            raise DataError(f"{self.name}: unreadable after line {number} ({error})") from None
        if rows:
            yield _raw_table(rows, lines)


class ParquetSource:
    """A Parquet file, streamed one record batch at a time; rows are numbered from 1 in file order."""

    kind = "columns"

    def __init__(self, uri: str, columns: Columns) -> None:
        import pyarrow.parquet as pq

        self.uri = uri if "://" in uri else str(Path(uri).resolve())
        self.name = uri
        self.read_report: dict[str, Any] = {}
        _check_exists(uri)
        fs, path = _filesystem(self.uri)
        try:
            with fs.open_input_file(path) as handle:
                meta = pq.ParquetFile(handle)
                self.schema = meta.schema_arrow
                self.group_rows = [meta.metadata.row_group(i).num_rows for i in range(meta.num_row_groups)]
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(f"{uri}: not a readable Parquet file ({error})") from None
        names = self.schema.names
        required = [columns.response, *([columns.id] if columns.id else [])]
        if (
            columns.prompt != Columns.prompt
        ):  # a prompt column the user named must exist; "prompt" may be absent
            required.append(columns.prompt)
        missing = [c for c in required if c not in names]
        if missing:
            raise DataError(f"{uri}: missing column(s) {', '.join(missing)}; found {names}")
        self.needed = [c for c in (columns.prompt, columns.response, columns.id) if c and c in names]

    def chunks(self, pieces: int = 1, min_rows: int = 1) -> list[dict[str, Any]]:
        """Row ranges for parallel readers: a row group, or slices of one when `pieces` asks for more chunks.

        A reader of a slice decodes its row group from the start (Parquet has no row-level seek): a few times the
        decoding, which costs far less than scoring the rows."""
        size = chunk_rows(sum(self.group_rows), pieces, min_rows) if pieces > 1 else None
        first, out = 1, []
        for index, n in enumerate(self.group_rows):
            step = size or n
            for skip in range(0, n, max(1, step)):
                out.append(
                    {"row_group": index, "first_row": first + skip, "skip": skip, "rows": min(step, n - skip)}
                )
            first += n
        return out

    def read(self, chunk: dict[str, Any], batch_size: int, keep_original: bool = False) -> Iterator[pa.Table]:
        """Raw blocks of a chunk: row number + the needed columns (every column with `keep_original`)."""
        import pyarrow.parquet as pq

        fs, path = _filesystem(self.uri)
        columns = None if keep_original else self.needed
        skip, remaining, row = chunk["skip"], chunk["rows"], chunk["first_row"]
        try:
            with fs.open_input_file(path) as handle:
                batches = pq.ParquetFile(handle).iter_batches(
                    batch_size=batch_size, row_groups=[chunk["row_group"]], columns=columns
                )
                for batch in batches:
                    if skip >= batch.num_rows:
                        skip -= batch.num_rows
                        continue
                    batch = batch.slice(skip, remaining)
                    skip, remaining = 0, remaining - batch.num_rows
                    rows = pa.array(range(row, row + batch.num_rows), pa.int64())
                    row += batch.num_rows
                    yield pa.Table.from_batches([batch]).append_column(ROW, rows)
                    if not remaining:
                        break
        except (pa.ArrowInvalid, OSError) as error:
            raise DataError(f"{self.name}: unreadable row group {chunk['row_group']} ({error})") from None


class RowsSource:
    """Rows already in memory (a CSV/TSV/JSON file read by the data layer, or a dataset), kept as JSON lines."""

    kind = "json"

    def __init__(self, name: str, rows: list[int], lines: list[bytes], read_report: dict[str, Any]) -> None:
        self.name = name
        self.rows = rows
        self.lines = lines
        self.read_report = read_report

    def chunks(self, pieces: int = 1, min_rows: int = 1) -> list[dict[str, Any]]:
        """Slices of the rows: one, or at least `pieces`."""
        size = chunk_rows(len(self.rows), pieces, min_rows) if pieces > 1 else max(1, len(self.rows))
        return [{"start": s, "rows": size} for s in range(0, len(self.rows), size)] or [
            {"start": 0, "rows": 0}
        ]

    def read(self, chunk: dict[str, Any], batch_size: int, keep_original: bool = False) -> Iterator[pa.Table]:
        """Raw blocks of `batch_size` rows of one slice."""
        stop = min(chunk["start"] + chunk["rows"], len(self.rows))
        for start in range(chunk["start"], stop, batch_size):
            end = min(start + batch_size, stop)
            yield _raw_table(self.rows[start:end], self.lines[start:end])


Source = JsonlSource | ParquetSource | RowsSource

STREAMED = (".jsonl", ".jsonl.gz", ".ndjson", ".parquet")
IN_MEMORY = (".csv", ".csv.gz", ".tsv", ".tsv.gz", ".json")


def _file_type(spec: str) -> str:
    name = spec.rsplit("/", 1)[-1].lower()
    return next((suffix for suffix in (*STREAMED, *IN_MEMORY) if name.endswith(suffix)), "")


def _json_line(row: dict[str, Any]) -> bytes:
    return json.dumps(row, ensure_ascii=False, default=str).encode("utf-8")


def open_source(
    spec: str, columns: Columns = Columns(), data_dir: str | None = None, split: str | None = None
) -> tuple[Source, Columns]:
    """The source for a file (JSONL, Parquet, CSV, TSV, JSON; a path or a URI) or a dataset name, and the columns
    to read it with (a dataset's own, whatever `columns` says)."""
    suffix = _file_type(spec)
    if suffix == ".parquet":
        return ParquetSource(spec, columns), columns
    if suffix in STREAMED:
        return JsonlSource(spec), columns
    if suffix in IN_MEMORY:
        return _table_source(spec, suffix, columns), columns
    if Path(spec).exists() or "://" in spec:
        raise DataError(f"{spec}: unsupported file type; use .jsonl, .parquet, .csv, .tsv or .json")
    return _dataset_source(spec, data_dir, split)


def _table_source(spec: str, suffix: str, columns: Columns) -> RowsSource:
    from seawall.data.readers import read_json_array, read_table

    if "://" in spec:
        raise DataError(
            f"{spec}: CSV/TSV/JSON files are read from local paths; use JSONL or Parquet for URIs"
        )
    required = [columns.response, *([columns.id] if columns.id else [])]
    if suffix == ".json":
        items, report = read_json_array(spec, required=required)
        numbers = [index + 1 for index in range(len(items))]
    else:
        delimiter = "\t" if suffix.startswith(".tsv") else ","
        items, report = read_table(spec, required=required, delimiter=delimiter)
        numbers = [int(item["__line__"]) for item in items]
    lines = [_json_line({k: v for k, v in item.items() if k != "__line__"}) for item in items]
    return RowsSource(spec, numbers, lines, report.as_dict())


def _dataset_source(name: str, data_dir: str | None, split: str | None) -> tuple[RowsSource, Columns]:
    import seawall.data.sources  # noqa: F401  (registers the datasets)
    from seawall.data import DATASETS, load
    from seawall.data.records import ResponseRecord, TaskExample

    if name not in DATASETS:
        raise SeawallError(
            f"{name!r} is neither a readable file (.jsonl, .parquet, .csv, .tsv, .json) nor a dataset "
            f"({', '.join(DATASETS.names())})"
        )
    dataset = load(name, data_dir=data_dir, split=split)
    records = dataset.records
    if records and isinstance(records[0], TaskExample):
        columns = Columns(prompt="input", response="target", id="id")
    elif not records or isinstance(records[0], ResponseRecord):
        columns = Columns(prompt="prompt", response="response", id="id")
    else:
        raise SeawallError(f"dataset {name!r} holds prompts without responses: there is nothing to score")
    lines = [_json_line(record.to_dict()) for record in records]
    source = RowsSource(name, list(range(1, len(lines) + 1)), lines, dataset.report.as_dict())
    return source, columns


# ---- scoring -------------------------------------------------------------------------------------------------


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _check(prompt: Any, response: Any, ident: Any, row: int, columns: Columns) -> tuple[Any, str | None, str]:
    """((prompt, response), id) of a row, or (None, reason, error) saying why it cannot be scored."""
    if _missing(response):
        return None, "missing response", f"no {columns.response!r}"
    if not isinstance(response, str):
        return None, "response not a string", f"{columns.response!r} is of type {type(response).__name__}"
    if _missing(prompt):
        prompt = ""
    if not isinstance(prompt, str):
        return None, "prompt not a string", f"{columns.prompt!r} is of type {type(prompt).__name__}"
    if columns.id is None:
        return ((prompt, response), str(row)), None, ""
    if _missing(ident):
        return None, "missing id", f"no {columns.id!r}"
    return ((prompt, response), str(ident)), None, ""


def _parse_json_row(raw: bytes) -> tuple[dict[str, Any] | None, str | None, str]:
    if not raw.strip():
        return None, BLANK, ""
    try:
        obj = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        return None, "unreadable line", f"invalid UTF-8 at byte {error.start}"
    except json.JSONDecodeError as error:
        return None, "unreadable line", f"invalid JSON: {error.msg} at column {error.colno}"
    if not isinstance(obj, dict):
        return None, "unreadable line", f"expected a JSON object, got {type(obj).__name__}"
    return obj, None, ""


def _fields(block: pa.Table, columns: Columns) -> Iterator[tuple[Any, Any, Any, str | None, str]]:
    """(prompt, response, id, reason, error) of each row of a raw block."""
    n = block.num_rows
    if RAW in block.column_names:
        for raw in block.column(RAW).to_pylist():
            obj, reason, error = _parse_json_row(raw)
            if obj is None:
                yield None, None, None, reason, error
            else:
                ident = obj.get(columns.id) if columns.id else None
                yield obj.get(columns.prompt), obj.get(columns.response), ident, None, ""
        return

    def column(name: str | None) -> list[Any]:
        return block.column(name).to_pylist() if name and name in block.column_names else [None] * n

    for prompt, response, ident in zip(
        column(columns.prompt), column(columns.response), column(columns.id), strict=True
    ):
        yield prompt, response, ident, None, ""


def scored_schema(has_category: bool) -> pa.Schema:
    """The columns `score_block` adds (before the original ones it carries with `keep_original`)."""
    fields = [
        pa.field(ROW, pa.int64()),
        pa.field("id", pa.string()),
        pa.field("p_unsafe", pa.float64()),
        pa.field("unsafe", pa.bool_()),
        *([pa.field("category", pa.string())] if has_category else []),
        pa.field("error", pa.string()),
        pa.field(REASON, pa.string()),
    ]
    return pa.schema(fields)


def score_block(detector: Any, block: pa.Table, columns: Columns, keep_original: bool = False) -> pa.Table:
    """Score a raw block: one output row per input row, in order; a bad row gets its reason and error instead."""
    rows = block.column(ROW).to_pylist()
    pairs, ids, reasons, errors = [], [], [], []
    for row, (prompt, response, ident, reason, error) in zip(rows, _fields(block, columns), strict=True):
        if reason is None:
            checked, reason, error = _check(prompt, response, ident, row, columns)
        else:
            checked = None
        pairs.append(checked[0] if checked else None)
        ids.append(checked[1] if checked else None)
        reasons.append(reason)
        errors.append(error or None)
    good = [i for i, pair in enumerate(pairs) if pair is not None]
    good_pairs = [pairs[i] for i in good]
    has_category = detector.category_labels is not None
    p_unsafe: list[float | None] = [None] * len(rows)
    unsafe: list[bool | None] = [None] * len(rows)
    category: list[str | None] = [None] * len(rows)
    if good:
        scores = detector.score_unsafe(good_pairs)
        categories = (
            detector.predict_category(good_pairs, scores=scores) if has_category else [None] * len(good)
        )
        for i, p, c in zip(good, scores, categories, strict=True):
            p_unsafe[i], unsafe[i], category[i] = float(p), bool(p >= detector.threshold_), c
    data = {ROW: rows, "id": ids, "p_unsafe": p_unsafe, "unsafe": unsafe}
    if has_category:
        data["category"] = category
    data |= {"error": errors, REASON: reasons}
    out = pa.table(data, schema=scored_schema(has_category))
    if keep_original:
        for name in block.column_names:
            if name == RAW:
                out = out.append_column(block.schema.field(RAW), block.column(RAW))
            elif name != ROW:
                out = out.append_column(ORIGINAL + name, block.column(name))
    return out


def local_blocks(
    source: Source, detector: Any, columns: Columns, batch_size: int = 64, keep_original: bool = False
) -> Iterator[pa.Table]:
    """The local engine: scored blocks of `source`, in order, scored in this process."""
    for chunk in source.chunks():
        for block in source.read(chunk, batch_size, keep_original):
            yield score_block(detector, block, columns, keep_original)


# ---- outputs ---------------------------------------------------------------------------------------------------


def partial_path(path: Path) -> Path:
    """Where `path` is written until it is complete: NAME.partial.EXT."""
    return path.with_name(f"{path.stem}.partial{path.suffix}")


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class JsonlOutput:
    """A JSON-lines output written under its partial name and renamed into place by `commit`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = partial_path(path)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.handle = self.partial.open("wb")

    def write_lines(self, lines: list[bytes]) -> None:
        """Append whole lines and flush, so the partial file always ends on a whole batch."""
        if lines:
            self.handle.write(b"".join(line + b"\n" for line in lines))
            self.handle.flush()

    def close(self) -> None:
        """Stop writing; the partial file stays (a failed run's good rows)."""
        self.handle.close()

    def commit(self) -> None:
        """fsync and rename the complete file into place."""
        self.handle.flush()
        os.fsync(self.handle.fileno())
        self.handle.close()
        os.replace(self.partial, self.path)


class ParquetOutput:
    """A Parquet output of a fixed schema, written in row groups under its partial name, renamed by `commit`."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        import pyarrow.parquet as pq

        self.path = path
        self.partial = partial_path(path)
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self.schema = schema
        self.writer = pq.ParquetWriter(self.partial, schema)
        self.pending: list[pa.Table] = []
        self.pending_rows = 0

    def write(self, table: pa.Table) -> None:
        """Buffer rows; write a row group once PARQUET_ROW_GROUP rows are buffered."""
        if table.num_rows:
            self.pending.append(table.cast(self.schema))
            self.pending_rows += table.num_rows
        if self.pending_rows >= PARQUET_ROW_GROUP:
            self._flush()

    def _flush(self) -> None:
        if self.pending:
            self.writer.write_table(pa.concat_tables(self.pending))
            self.pending, self.pending_rows = [], 0

    def close(self) -> None:
        """Write what is buffered and the footer: the partial file stays readable."""
        self._flush()
        self.writer.close()

    def commit(self) -> None:
        """Close, fsync and rename into place."""
        self.close()
        _fsync(self.partial)
        os.replace(self.partial, self.path)


def _output_path(path: str | Path, allowed: tuple[str, ...], what: str, why: str = "") -> Path:
    text = str(path)
    if "://" in text:
        raise SeawallError(f"{what} {text}: outputs are local files (renamed into place when complete)")
    path = Path(text)
    if path.suffix not in allowed:
        raise SeawallError(f"{what} {path}: use a {' or '.join(allowed)} file{why}")
    return path


@dataclass
class Tally:
    """Counts of one run, the same whichever engine scored it."""

    rows: int = 0
    blank_lines: int = 0
    scored: int = 0
    unsafe: int = 0
    bad: int = 0
    bad_by_reason: Counter = field(default_factory=Counter)
    bad_rows: list[dict[str, Any]] = field(default_factory=list)
    safe_by_category: Counter = field(default_factory=Counter)
    unsafe_by_category: Counter = field(default_factory=Counter)

    def add(self, block: pa.Table) -> None:
        """Count a scored block's rows."""
        reasons = block.column(REASON).to_pylist()
        unsafe = block.column("unsafe").to_pylist()
        categories = (
            block.column("category").to_pylist()
            if "category" in block.column_names
            else [None] * block.num_rows
        )
        errors = block.column("error").to_pylist()
        for row, reason, flag, category, error in zip(
            block.column(ROW).to_pylist(), reasons, unsafe, categories, errors, strict=True
        ):
            if reason == BLANK:
                self.blank_lines += 1
                continue
            self.rows += 1
            if reason is not None:
                self.bad += 1
                self.bad_by_reason[reason] += 1
                if len(self.bad_rows) < LISTED_BAD_ROWS:
                    self.bad_rows.append({"row": row, "reason": reason, "error": error})
                continue
            self.scored += 1
            self.unsafe += int(flag)
            (self.unsafe_by_category if flag else self.safe_by_category)[category or "unknown"] += 1

    def check(self, name: str) -> None:
        """An input with no row, or with no row that could be scored, is an error (wrong file or column?)."""
        if not self.rows:
            raise DataError(f"{name}: no rows")
        if not self.scored:
            first = self.bad_rows[0]
            raise DataError(
                f"{name}: none of its {self.rows} rows could be scored; row {first['row']}: "
                f"{first['reason']} ({first['error']})"
            )

    def as_dict(self) -> dict[str, Any]:
        """The report's counts."""
        return {
            "rows": self.rows,
            "blank_lines": self.blank_lines,
            "scored": self.scored,
            "unsafe": self.unsafe,
            "bad": self.bad,
            "bad_by_reason": dict(sorted(self.bad_by_reason.items())),
            "bad_rows": self.bad_rows,
        }


def _not_blank(block: pa.Table) -> pa.Table:
    import pyarrow.compute as pc

    reason = block.column(REASON)
    return block.filter(pc.or_kleene(pc.is_null(reason), pc.not_equal(reason, BLANK)))


def _fail(outputs: list[Any], error: BaseException, tally: Tally) -> None:
    """Close every output on a failure and say where the rows scored so far are."""
    for output in outputs:
        output.close()
    where = ", ".join(str(o.partial) for o in outputs)
    if isinstance(error, SeawallError):
        raise type(error)(
            f"{error}; the {tally.rows} rows read before it are kept in {where}; no output was written"
        ) from None


def write_predictions(blocks: Iterator[pa.Table], output: str | Path, source: Source, detector: Any) -> dict:
    """Write one prediction per row (row, id, p_unsafe, unsafe, category, error) to a .parquet or .jsonl file."""
    path = _output_path(output, (".parquet", ".jsonl"), "--output")
    has_category = detector.category_labels is not None
    names = [ROW, "id", "p_unsafe", "unsafe", *(["category"] if has_category else []), "error"]
    full = scored_schema(has_category)
    schema = pa.schema([pa.field("row", pa.int64()) if n == ROW else full.field(n) for n in names])
    out: Any = ParquetOutput(path, schema) if path.suffix == ".parquet" else JsonlOutput(path)
    tally = Tally()
    try:
        for block in blocks:
            tally.add(block)
            table = _not_blank(block).select(names).rename_columns(schema.names)
            if isinstance(out, ParquetOutput):
                out.write(table)
            else:
                out.write_lines([_json_line(row) for row in table.to_pylist()])
        tally.check(source.name)
    except BaseException as error:
        _fail([out], error, tally)
        raise
    out.commit()
    return {
        "input": source.name,
        "output": str(path),
        "detector_id": detector.detector_id,
        "threshold": detector.threshold_,
        **tally.as_dict(),
        "read_report": source.read_report,
    }


def filter_outputs(out: str | Path) -> dict[str, Path]:
    """The files `filter` writes for CLEAN: the kept rows, the dropped rows, the bad rows, the report."""
    path = Path(str(out))
    stem = path.with_suffix("")
    return {
        "clean": path,
        "dropped": stem.with_name(f"{stem.name}.dropped.jsonl"),
        "bad": stem.with_name(f"{stem.name}.bad.jsonl"),
        "report": stem.with_name(f"{stem.name}.report.json"),
    }


def _originals(block: pa.Table, source: Source) -> pa.Table:
    """The Parquet columns a scored block carries, under their own names."""
    names = source.schema.names
    return block.select([ORIGINAL + name for name in names]).rename_columns(names)


def _original_rows(block: pa.Table, source: Source) -> list[dict[str, Any]]:
    if source.kind == "json":
        return [json.loads(raw) for raw in block.column(RAW).to_pylist()]
    return _originals(block, source).to_pylist()


def write_filtered(blocks: Iterator[pa.Table], out: str | Path, source: Source, detector: Any) -> dict:
    """Split scored rows: safe ones to CLEAN (as they were), unsafe ones to CLEAN.dropped.jsonl (with p_unsafe and
    category, for review), bad ones to CLEAN.bad.jsonl; write CLEAN.report.json; return the report."""
    import pyarrow.compute as pc

    if source.kind == "columns":
        path = _output_path(out, (".jsonl", ".parquet"), "--out")
    else:
        path = _output_path(
            out, (".jsonl",), "--out", " (only a Parquet input has column types to write Parquet)"
        )
    paths = filter_outputs(path)
    clean: Any = (
        ParquetOutput(paths["clean"], source.schema)
        if paths["clean"].suffix == ".parquet"
        else JsonlOutput(paths["clean"])
    )
    dropped, bad = JsonlOutput(paths["dropped"]), JsonlOutput(paths["bad"])
    tally = Tally()
    try:
        for block in blocks:
            tally.add(block)
            reason, unsafe = block.column(REASON), block.column("unsafe")
            kept = block.filter(pc.and_(pc.is_null(reason), pc.invert(unsafe)))
            if isinstance(clean, ParquetOutput):
                clean.write(_originals(kept, source))
            elif source.kind == "json":
                clean.write_lines(kept.column(RAW).to_pylist())
            else:
                clean.write_lines([_json_line(row) for row in _original_rows(kept, source)])
            flagged = block.filter(pc.and_(pc.is_null(reason), unsafe))
            review = zip(
                _original_rows(flagged, source),
                flagged.column(ROW).to_pylist(),
                flagged.column("p_unsafe").to_pylist(),
                flagged.column("category").to_pylist()
                if "category" in flagged.column_names
                else [None] * flagged.num_rows,
                strict=True,
            )
            dropped.write_lines(
                [
                    _json_line({**row, "seawall_row": r, "seawall_p_unsafe": p, "seawall_category": c})
                    for row, r, p, c in review
                ]
            )
            bad.write_lines(_bad_lines(_not_blank(block.filter(pc.is_valid(reason))), source))
        tally.check(source.name)
    except BaseException as error:
        _fail([clean, dropped, bad], error, tally)
        raise
    # The clean set goes last: once it is in place, its dropped and bad rows are too.
    dropped.commit()
    bad.commit()
    clean.commit()
    categories = sorted(set(tally.safe_by_category) | set(tally.unsafe_by_category))
    counts = tally.as_dict()
    report = {
        "input": source.name,
        "outputs": {k: str(v) for k, v in paths.items()},
        "detector_id": detector.detector_id,
        "threshold": detector.threshold_,
        "rows": counts.pop("rows"),
        "kept": tally.scored - tally.unsafe,
        "dropped": counts.pop("unsafe"),
        **counts,
        "per_category": {
            c: {"kept": tally.safe_by_category[c], "dropped": tally.unsafe_by_category[c]} for c in categories
        },
        "read_report": source.read_report,
    }
    from seawall.io import atomic_write_json

    atomic_write_json(paths["report"], report)
    return report


def _bad_lines(block: pa.Table, source: Source) -> list[bytes]:
    meta = zip(
        block.column(ROW).to_pylist(),
        block.column(REASON).to_pylist(),
        block.column("error").to_pylist(),
        strict=True,
    )
    if source.kind == "json":
        originals = [{"line": raw.decode("utf-8", errors="replace")} for raw in block.column(RAW).to_pylist()]
    else:
        originals = [{"data": row} for row in _originals(block, source).to_pylist()]
    return [
        _json_line({"row": row, "reason": reason, "error": error, **original})
        for (row, reason, error), original in zip(meta, originals, strict=True)
    ]


# ---- one call per command ------------------------------------------------------------------------------------


def scored_blocks(
    source: Source,
    detector: Any,
    columns: Columns,
    engine: str = "local",
    batch_size: int = 64,
    keep_original: bool = False,
    address: str | None = None,
    workers: int | None = None,
) -> Iterator[pa.Table]:
    """Scored blocks of `source` from the chosen engine; `detector` is a loaded detector (local) or a
    `DetectorSpec` (either engine: Ray's actors each load it from its folder)."""
    if engine not in ENGINES:
        raise SeawallError(f"unknown engine {engine!r}; use {' or '.join(ENGINES)}")
    if batch_size < 1:
        raise SeawallError(f"--batch-size must be at least 1, got {batch_size}")
    if engine == "local":
        loaded = detector.load() if isinstance(detector, DetectorSpec) else detector
        return local_blocks(source, loaded, columns, batch_size, keep_original)
    if not isinstance(detector, DetectorSpec):
        raise SeawallError(
            "the ray engine loads the detector in each worker: pass a DetectorSpec (its folder)"
        )
    from seawall.detect.ray_engine import ray_blocks

    return ray_blocks(source, detector, columns, batch_size, keep_original, address, workers)


def predict_file(
    input: str,
    output: str | Path,
    detector: Any,
    columns: Columns = Columns(),
    engine: str = "local",
    batch_size: int = 64,
    address: str | None = None,
    workers: int | None = None,
    data_dir: str | None = None,
) -> dict[str, Any]:
    """Score every row of `input` into `output` (.parquet or .jsonl); returns the run's report."""
    _output_path(output, (".parquet", ".jsonl"), "--output")
    source, columns = open_source(input, columns, data_dir)
    loaded = detector.load() if isinstance(detector, DetectorSpec) else detector
    worker_detector = detector if engine == "ray" else loaded
    blocks = scored_blocks(source, worker_detector, columns, engine, batch_size, False, address, workers)
    return write_predictions(blocks, output, source, loaded)


def filter_file(
    data: str,
    out: str | Path,
    detector: Any,
    columns: Columns = Columns(),
    engine: str = "local",
    batch_size: int = 64,
    address: str | None = None,
    workers: int | None = None,
    data_dir: str | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Drop the pairs the detector judges unsafe from a fine-tuning set; returns the report (see `write_filtered`)."""
    source, columns = open_source(data, columns, data_dir, split)
    # The driver's copy gives the writers the detector's id, threshold and categories; Ray's workers load their own.
    loaded = detector.load() if isinstance(detector, DetectorSpec) else detector
    worker_detector = detector if engine == "ray" else loaded
    blocks = scored_blocks(source, worker_detector, columns, engine, batch_size, True, address, workers)
    return write_filtered(blocks, out, source, loaded)
