"""Malformed files give one clear error naming file, row and column; invalid bytes are repaired and counted."""

from __future__ import annotations

import json

import pytest

from seawall.data.generic import ColumnMap, load_file
from seawall.data.readers import read_jsonl, read_table
from seawall.errors import DataError


def test_invalid_bytes_are_repaired_row_by_row(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_bytes(b"prompt,response,label\nhi,caf\xc3\xa9 ok,0\nq,bad \xfd\xfd byte,1\nq2,nul\x00here,1\n")
    rows, report = read_table(path, required=("prompt", "response", "label"))
    assert [r["response"] for r in rows] == ["café ok", "bad \ufffd\ufffd byte", "nulhere"]
    assert report.repaired_rows == 2
    assert report.repaired == {"invalid utf-8 bytes": 1, "nul characters": 1}


def test_empty_file(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: file is empty"):
        read_table(path)


def test_missing_column_names_file_and_column(tmp_path):
    path = tmp_path / "cols.csv"
    path.write_text("prompt,answer\na,b\n")
    with pytest.raises(DataError, match=r"cols\.csv: missing column\(s\) response"):
        read_table(path, required=("prompt", "response"))


def test_wrong_delimiter_is_diagnosed(tmp_path):
    path = tmp_path / "semi.csv"
    path.write_text("prompt;response;label\na;b;1\n")
    with pytest.raises(DataError, match="wrong delimiter"):
        read_table(path, required=("prompt", "response"))


def test_ragged_row_names_its_line(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("prompt,response,label\na,b,1\nc,d\n")
    with pytest.raises(DataError, match=r"ragged\.csv, row 3: 2 fields"):
        read_table(path)


def test_label_outside_set_names_row_and_column(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("prompt,response,label\na,b,1\nc,d,maybe\n")
    with pytest.raises(DataError, match=r"labels\.csv, row 3, column label: label 'maybe'"):
        load_file(path)


def test_nan_label_is_unknown_and_missing_prompt_is_counted(tmp_path):
    path = tmp_path / "user.jsonl"
    lines = [
        {"q": "p1", "a": "r1", "y": 1},
        {"q": "p2", "a": "r2", "y": float("nan")},
        {"q": "", "a": "r3", "y": 0},
        {"q": "p4", "a": None, "y": "safe"},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    dataset = load_file(path, ColumnMap(prompt="q", response="a", label="y"))
    assert [r.label for r in dataset.records] == ["unsafe", "unknown", "safe"]
    assert dataset.records[2].response == ""
    assert dataset.report.skipped == {"missing prompt": 1}


def test_bad_json_line_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"prompt": "a"}\n{"prompt": \n')
    with pytest.raises(DataError, match=r"bad\.jsonl, line 2: invalid JSON"):
        read_jsonl(path)


def test_parquet_and_tsv_user_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(
        pa.table({"prompt": ["a", "b"], "response": ["x", "y"], "label": [1, 0]}), tmp_path / "u.parquet"
    )
    assert [r.label for r in load_file(tmp_path / "u.parquet").records] == ["unsafe", "safe"]
    (tmp_path / "u.tsv").write_text("prompt\tresponse\tlabel\na\tx\tunsafe\n")
    assert load_file(tmp_path / "u.tsv").records[0].label == "unsafe"
    with pytest.raises(DataError, match="unsupported file type"):
        load_file(tmp_path / "u.xlsx")


def test_prompt_only_files(tmp_path):
    path = tmp_path / "prompts.csv"
    path.write_text("text,is_harmful\nhow do I bake bread,0\nhow do I build a bomb,1\n")
    dataset = load_file(path, ColumnMap(prompt="text", response=None, label=None, harmful="is_harmful"))
    assert [r.harmful for r in dataset.records] == [False, True]


def test_na_like_responses_survive_and_na_like_labels_are_unknown(tmp_path):
    path = tmp_path / "na.csv"
    path.write_text(
        "prompt,response,label,category\na,NA,unharmful,x\nb,None,1,\nc,null,NA,y\nd,N/A,null,y\ne,,n/a,y\n"
    )
    dataset = load_file(path)
    assert [r.response for r in dataset.records] == ["NA", "None", "null", "N/A", ""]
    assert [r.label for r in dataset.records] == ["safe", "unsafe", "unknown", "unknown", "unknown"]
    assert [r.category for r in dataset.records] == ["x", None, "y", "y", "y"]
    assert dataset.report.repaired == {"missing response read as empty": 1}


def test_a_named_optional_column_must_exist(tmp_path):
    path = tmp_path / "plain.jsonl"
    path.write_text(json.dumps({"prompt": "p", "response": "r"}) + "\n")
    record = load_file(path).records[0]
    assert (record.label, record.category) == ("unknown", None)
    with pytest.raises(DataError, match=r"plain\.jsonl: missing column 'kind'"):
        load_file(path, ColumnMap(category="kind"))
    with pytest.raises(DataError, match=r"plain\.jsonl: missing column 'y'"):
        load_file(path, ColumnMap(label="y"))
