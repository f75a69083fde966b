"""The local batch engine on real files: SecureBreak rows with bad rows mixed in, JSONL/Parquet/CSV in and out."""

from __future__ import annotations

import gzip
import io
import json
import tracemalloc
from pathlib import Path

import pyarrow as pa
import pyarrow.csv
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from seawall.cli import app
from seawall.data import load
from seawall.detect import batch, load_detector, make_detector
from seawall.detect.batch import (
    Columns,
    DetectorSpec,
    filter_file,
    filter_outputs,
    partial_path,
    predict_file,
)
from seawall.detect.cli import stream_predict
from seawall.errors import DataError, SeawallError

# (line index, raw line, reason): every kind of bad row, and a blank line, at known places.
BAD_LINES = [
    (3, b"{not json", "unreadable line"),
    (7, b'{"prompt": "hello"}', "missing response"),
    (9, b'{"prompt": "hello", "response": 42}', "response not a string"),
    (11, b'\xff\xfe{"response": "x"}', "unreadable line"),
    (15, b"[1, 2]", "unreadable line"),
    (18, b'{"prompt": 7, "response": "fine"}', "prompt not a string"),
    (20, b'{"prompt": "p", "response": null}', "missing response"),
]
BLANK_AT = 13


@pytest.fixture(scope="module")
def detector_dir(sb_split, tmp_path_factory) -> Path:
    """A real tfidf detector (with its risk-category model) fitted on a few hundred SecureBreak rows."""
    folder = tmp_path_factory.mktemp("batch") / "tfidf"
    make_detector("tfidf").fit(sb_split["train"][:300], dev=sb_split["dev"][:150]).save(folder)
    return folder


@pytest.fixture(scope="module")
def detector(detector_dir):
    return load_detector(detector_dir)


def _good_rows(sb_split, n: int) -> list[dict]:
    test = sb_split["test"]
    return [
        {"prompt": r.prompt, "response": r.response, "rid": r.id, "label": r.label}
        for r in (test[i % len(test)] for i in range(n))
    ]


def write_jsonl_with_bad_rows(path: Path, rows: list[dict]) -> tuple[list[bytes], dict[int, str]]:
    """Write rows as JSONL with BAD_LINES and one blank line spliced in; returns (lines, {line number: reason})."""
    lines = [json.dumps(row, ensure_ascii=False).encode() for row in rows]
    for index, raw, _ in BAD_LINES:
        lines[index] = raw
    lines[BLANK_AT] = b"   "
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines, {index + 1: reason for index, _, reason in BAD_LINES}


def _expected(detector, lines: list[bytes], bad: dict[int, str]) -> dict[int, tuple[float, str | None]]:
    """What the detector itself says about each good line: {line number: (p_unsafe, category)}."""
    numbers = [n for n in range(1, len(lines) + 1) if n not in bad and n != BLANK_AT + 1]
    objs = [json.loads(lines[n - 1]) for n in numbers]
    pairs = [(o["prompt"], o["response"]) for o in objs]
    scores = detector.score_unsafe(pairs)
    categories = detector.predict_category(pairs)
    return {n: (float(p), c) for n, p, c in zip(numbers, scores, categories, strict=True)}


def _read_output(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_predict_scores_every_row_in_order_and_counts_bad_rows(
    detector_dir, detector, sb_split, tmp_path, suffix
):
    lines, bad = write_jsonl_with_bad_rows(tmp_path / "in.jsonl", _good_rows(sb_split, 150))
    report = predict_file(
        str(tmp_path / "in.jsonl"), tmp_path / f"out{suffix}", DetectorSpec(str(detector_dir))
    )
    rows = _read_output(tmp_path / f"out{suffix}")
    expected = _expected(detector, lines, bad)

    assert [r["row"] for r in rows] == [n for n in range(1, 151) if n != BLANK_AT + 1]
    for row in rows:
        if row["row"] in bad:
            assert row["p_unsafe"] is None and row["unsafe"] is None and row["error"], row
            continue
        p, category = expected[row["row"]]
        assert row["p_unsafe"] == pytest.approx(p, abs=1e-12)
        assert row["unsafe"] == (p >= detector.threshold_)
        assert row["category"] == category and row["id"] == str(row["row"]) and row["error"] is None
    assert report["rows"] == 149 and report["blank_lines"] == 1
    assert report["scored"] == len(expected) == 149 - len(bad)
    assert report["unsafe"] == sum(p >= detector.threshold_ for p, _ in expected.values())
    assert report["bad"] == len(bad)
    assert report["bad_by_reason"] == {
        "missing response": 2,
        "prompt not a string": 1,
        "response not a string": 1,
        "unreadable line": 3,
    }
    assert [(b["row"], b["reason"]) for b in report["bad_rows"]] == sorted(bad.items())
    # Every reason is tested: "missing id" in the Parquet test.
    assert set(report["bad_by_reason"]) | {"missing id"} == set(batch.BAD_REASONS)
    assert not partial_path(tmp_path / f"out{suffix}").exists()


@pytest.mark.parametrize("suffix", [".jsonl", ".parquet", ".csv"])
def test_chunks_for_parallel_readers_cover_every_row_once(sb_split, tmp_path, monkeypatch, suffix):
    # A tiny offset index forces the JSONL scan to thin it (every 2nd, 4th, … line) several times.
    monkeypatch.setattr(batch, "MAX_LINE_INDEX", 8)
    rows = _good_rows(sb_split, 500)
    path = tmp_path / f"in{suffix}"
    if suffix == ".jsonl":
        write_jsonl_with_bad_rows(path, rows)
    elif suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=120)
    else:
        pa.csv.write_csv(pa.Table.from_pylist(rows), path)
    source, _ = batch.open_source(str(path))

    def read(chunks: list[dict]) -> list[tuple]:
        blocks = [block for chunk in chunks for block in source.read(chunk, 16)]
        return [tuple(r.values()) for block in blocks for r in block.to_pylist()]

    whole = read(source.chunks())
    chunks = source.chunks(pieces=12, min_rows=16)
    assert len(chunks) >= 6  # (a thinned JSONL index cuts at multiples of its step: 64 lines here)
    assert read(chunks) == whole and len(whole) == 500


def test_predict_agrees_with_the_stdin_stream(detector, sb_split, tmp_path):
    write_jsonl_with_bad_rows(tmp_path / "in.jsonl", _good_rows(sb_split, 80))
    predict_file(str(tmp_path / "in.jsonl"), tmp_path / "out.jsonl", detector, batch_size=7)
    batch = {r["row"]: r for r in _read_output(tmp_path / "out.jsonl")}
    out = io.StringIO()
    stream_predict(detector, io.BytesIO((tmp_path / "in.jsonl").read_bytes()), out, batch_size=16)
    for streamed in map(json.loads, out.getvalue().splitlines()):
        row = batch[streamed["line"]]
        if "error" in streamed:
            assert row[
                "error"
            ]  # the stdin stream reads a non-string prompt as text; the batch engine does not
        elif row["error"] is None:
            assert row["p_unsafe"] == pytest.approx(streamed["p_unsafe"], abs=1e-6)
            assert row["category"] == streamed["category"]


def test_predict_parquet_with_column_flags_ids_and_row_groups(detector_dir, detector, sb_split, tmp_path):
    rows = _good_rows(sb_split, 90)
    table = pa.table(
        {
            "question": [r["prompt"] for r in rows],
            "answer": [None if i == 5 else r["response"] for i, r in enumerate(rows)],
            "uid": [None if i == 8 else f"u{i}" for i in range(len(rows))],
        }
    )
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=32)
    report = predict_file(
        str(tmp_path / "in.parquet"),
        tmp_path / "out.parquet",
        detector,
        Columns(prompt="question", response="answer", id="uid"),
        batch_size=10,
    )
    out = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert [r["row"] for r in out] == list(range(1, 91))
    assert report["bad_by_reason"] == {"missing response": 1, "missing id": 1}
    assert out[5]["error"] == "no 'answer'" and out[8]["error"] == "no 'uid'"
    good = [i for i in range(90) if i not in (5, 8)]
    scores = detector.score_unsafe([(rows[i]["prompt"], rows[i]["response"]) for i in good])
    assert [out[i]["p_unsafe"] for i in good] == pytest.approx(list(scores), abs=1e-12)
    assert [out[i]["id"] for i in good] == [f"u{i}" for i in good]

    with pytest.raises(DataError, match=r"in\.parquet: missing column\(s\) reply"):
        predict_file(
            str(tmp_path / "in.parquet"), tmp_path / "x.parquet", detector, Columns(response="reply")
        )
    with pytest.raises(SeawallError, match=r"out\.csv: use a \.parquet or \.jsonl file"):
        predict_file(str(tmp_path / "in.parquet"), tmp_path / "out.csv", detector, Columns(response="answer"))


def test_filter_jsonl_keeps_safe_lines_verbatim_and_sets_the_rest_aside(detector, sb_split, tmp_path):
    lines, bad = write_jsonl_with_bad_rows(tmp_path / "set.jsonl", _good_rows(sb_split, 120))
    report = filter_file(str(tmp_path / "set.jsonl"), tmp_path / "clean.jsonl", detector, batch_size=16)
    expected = _expected(detector, lines, bad)
    safe = [n for n, (p, _) in expected.items() if p < detector.threshold_]
    unsafe = [n for n, (p, _) in expected.items() if p >= detector.threshold_]
    assert safe and unsafe

    paths = filter_outputs(tmp_path / "clean.jsonl")
    assert paths["clean"].read_bytes() == b"".join(lines[n - 1] + b"\n" for n in safe)
    dropped = _read_output(paths["dropped"])
    assert [d["seawall_row"] for d in dropped] == unsafe
    for d in dropped:
        p, category = expected[d["seawall_row"]]
        assert d["seawall_p_unsafe"] == pytest.approx(p) and d["seawall_category"] == category
        assert d["rid"] == json.loads(lines[d["seawall_row"] - 1])["rid"]
    bad_rows = _read_output(paths["bad"])
    assert [(b["row"], b["reason"]) for b in bad_rows] == sorted(bad.items())
    assert bad_rows[0]["line"] == "{not json"

    assert (report["kept"], report["dropped"], report["bad"]) == (len(safe), len(unsafe), len(bad))
    assert report["rows"] == report["kept"] + report["dropped"] + report["bad"] == 119
    by_category = report["per_category"]
    assert sum(c["kept"] for c in by_category.values()) == len(safe)
    for category in {c for _, c in expected.values()}:
        dropped_here = sum(1 for n in unsafe if expected[n][1] == category)
        assert by_category[category or "unknown"]["dropped"] == dropped_here
    assert json.loads(paths["report"].read_text()) == json.loads(json.dumps(report))


def test_filter_parquet_keeps_its_schema_and_its_own_id_column(detector, sb_split, tmp_path):
    rows = _good_rows(sb_split, 70)
    table = pa.table(
        {
            "id": pa.array(range(70), pa.int32()),
            "prompt": [r["prompt"] for r in rows],
            "response": [r["response"] for r in rows],
            "weight": pa.array([i / 10 for i in range(70)], pa.float32()),
        }
    )
    pq.write_table(table, tmp_path / "set.parquet", row_group_size=25)
    report = filter_file(str(tmp_path / "set.parquet"), tmp_path / "clean.parquet", detector, batch_size=8)
    clean = pq.read_table(tmp_path / "clean.parquet")
    scores = detector.score_unsafe([(r["prompt"], r["response"]) for r in rows])
    keep = [i for i, p in enumerate(scores) if p < detector.threshold_]
    assert clean.schema == table.schema
    assert clean.equals(table.take(keep))
    dropped = _read_output(filter_outputs(tmp_path / "clean.parquet")["dropped"])
    assert [d["id"] for d in dropped] == [i for i in range(70) if i not in keep]
    assert report["kept"] == len(keep) and report["bad"] == 0


def test_filter_reads_csv_through_the_data_layer_with_column_flags(detector, sb_split, tmp_path):
    import csv

    rows = _good_rows(sb_split, 40)
    with (tmp_path / "set.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["instruction", "output"])
        writer.writeheader()
        writer.writerows({"instruction": r["prompt"], "output": r["response"]} for r in rows)
    report = filter_file(
        str(tmp_path / "set.csv"), tmp_path / "clean.jsonl", detector, Columns("instruction", "output")
    )
    assert report["rows"] == 40 and report["bad"] == 0 and report["read_report"]["rows"] == 40
    kept = _read_output(tmp_path / "clean.jsonl")
    assert len(kept) == report["kept"] and set(kept[0]) == {"instruction", "output"}
    with pytest.raises(DataError, match=r"set\.csv: missing column\(s\) answer"):
        filter_file(str(tmp_path / "set.csv"), tmp_path / "c.jsonl", detector, Columns(response="answer"))
    with pytest.raises(SeawallError, match="only a Parquet input"):
        filter_file(
            str(tmp_path / "set.csv"), tmp_path / "c.parquet", detector, Columns("instruction", "output")
        )


def test_filter_a_dataset_by_name(detector, tmp_path):
    report = filter_file("safety-tuned-llamas", tmp_path / "clean.jsonl", detector, batch_size=256)
    n = len(load("safety-tuned-llamas"))
    assert report["rows"] == n == report["kept"] + report["dropped"] + report["bad"]
    kept = _read_output(tmp_path / "clean.jsonl")
    assert len(kept) == report["kept"] and {"id", "prompt", "response", "label"} <= set(kept[0])
    with pytest.raises(SeawallError, match="prompts without responses"):
        filter_file("advbench", tmp_path / "x.jsonl", detector)
    with pytest.raises(SeawallError, match="neither a readable file"):
        filter_file("no-such-set", tmp_path / "x.jsonl", detector)


def test_a_failed_run_keeps_the_rows_scored_and_writes_no_output(detector, sb_split, tmp_path):
    rows = _good_rows(sb_split, 3000)
    data = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    truncated = tmp_path / "set.jsonl.gz"
    truncated.write_bytes(data[: len(data) // 2])
    clean = tmp_path / "clean.jsonl"
    clean.write_text("an earlier run's clean set\n")

    with pytest.raises(DataError, match=r"set\.jsonl\.gz: unreadable after line \d+.*clean\.partial\.jsonl"):
        filter_file(str(truncated), clean, detector, batch_size=100)
    assert clean.read_text() == "an earlier run's clean set\n"
    paths = filter_outputs(clean)
    assert not paths["dropped"].exists() and not paths["report"].exists()
    kept = _read_output(partial_path(clean))
    dropped = _read_output(partial_path(paths["dropped"]))
    scored = len(kept) + len(dropped)
    assert scored > 0 and scored % 100 == 0  # whole batches, all of them there
    assert kept == [r for r in rows[:scored] if r["rid"] not in {d["rid"] for d in dropped}]

    out = tmp_path / "scores.parquet"
    with pytest.raises(DataError, match=r"scores\.partial\.parquet"):
        predict_file(str(truncated), out, detector, batch_size=100)
    assert not out.exists()
    partial = pq.read_table(partial_path(out))  # readable: the footer was written on the way out
    assert partial.column("row").to_pylist() == list(range(1, scored + 1))


def test_memory_does_not_grow_with_the_input(detector, sb_split, tmp_path):
    def peak(n: int) -> int:
        path = tmp_path / f"in-{n}.jsonl"
        path.write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in _good_rows(sb_split, n)))
        tracemalloc.start()
        predict_file(str(path), tmp_path / f"out-{n}.jsonl", detector, batch_size=32)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    # Both inputs fill the 1 MB read buffer; holding the input (~1 kB a row) or the predictions (~0.3 kB a row)
    # would add megabytes to the second peak.
    peak(100)  # first-call allocations (caches, lazy imports) out of the way
    small, large = peak(1500), peak(4500)
    assert large < 1.25 * small, (small, large)


def test_cli_predict_and_filter(detector_dir, sb_split, tmp_path):
    write_jsonl_with_bad_rows(tmp_path / "in.jsonl", _good_rows(sb_split, 60))
    runner = CliRunner()
    args = ["detect", "predict", "--model", str(detector_dir), "--input", str(tmp_path / "in.jsonl")]
    result = runner.invoke(app, [*args, "--output", str(tmp_path / "out.parquet"), "--id-col", "rid"])
    assert result.exit_code == 0, result.output
    assert "7 bad rows" in result.output and "1 blank lines" in result.output
    out = pq.read_table(tmp_path / "out.parquet").to_pylist()
    assert out[0]["id"] == _good_rows(sb_split, 1)[0]["rid"]

    result = runner.invoke(app, args)
    assert isinstance(result.exception, SeawallError) and "--input and --output go together" in str(
        result.exception
    )

    clean = str(tmp_path / "clean.jsonl")
    result = runner.invoke(
        app, ["detect", "filter", str(tmp_path / "in.jsonl"), "--detector", str(detector_dir), "--out", clean]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "clean.report.json").read_text())
    assert f"kept {report['kept']}, dropped {report['dropped']}, bad 7 of 59 rows" in result.output
