"""SecureBreak download from a mirror (file:// and a real loopback HTTP server), and the `seawall data` CLI."""

from __future__ import annotations

import functools
import http.server
import json
import threading

import pytest
from typer.testing import CliRunner

from seawall.cli import app
from seawall.data import load
from seawall.errors import DataError


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAWALL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def http_mirror(tmp_path, shared_data):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "SecureBreak.csv").write_bytes(
        (shared_data / "responses/securebreak/SecureBreak.csv").read_bytes()
    )
    (folder / "tampered.csv").write_bytes(b"Question,Response\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_download_over_http_with_checksum(cache, http_mirror, tmp_path):
    dataset = load("securebreak", data_dir=tmp_path, url=f"{http_mirror}/SecureBreak.csv")
    assert len(dataset) == 3059
    assert (cache / "data" / "SecureBreak.csv").is_file()


def test_download_rejects_a_wrong_checksum_and_saves_nothing(cache, http_mirror, tmp_path):
    with pytest.raises(DataError, match=r"sha256 .* does not match"):
        load("securebreak", data_dir=tmp_path, url=f"{http_mirror}/tampered.csv")
    assert not (cache / "data" / "SecureBreak.csv").exists()


def test_download_from_file_url(cache, shared_data, tmp_path):
    url = (shared_data / "responses/securebreak/SecureBreak.csv").as_uri()
    assert len(load("securebreak", data_dir=tmp_path, url=url)) == 3059


def test_unreachable_mirror_is_a_clear_error(cache, tmp_path):
    with pytest.raises(DataError, match="could not download"):
        load("securebreak", data_dir=tmp_path, url="http://127.0.0.1:9/SecureBreak.csv")


def test_missing_data_dir_says_how_to_set_it(tmp_path, monkeypatch):
    from seawall.paths import data_dir

    monkeypatch.setenv("SEAWALL_DATA", str(tmp_path / "nope"))
    with pytest.raises(Exception, match="SEAWALL_DATA"):
        data_dir()


runner = CliRunner()


def test_cli_stats_prints_per_category_table(shared_data, tmp_path):
    result = runner.invoke(
        app,
        ["data", "stats", "securebreak", "--data-dir", str(shared_data), "--json", str(tmp_path / "s.json")],
    )
    assert result.exit_code == 0, result.output
    assert "Government decision-making" in result.output and "unsafe share" in result.output
    stats = json.loads((tmp_path / "s.json").read_text())
    assert (
        stats["duplicate_pairs"] == 670
        and stats["empty_responses"] == 309
        and stats["read"]["repaired_rows"] == 369
    )


def test_cli_split_then_export_a_subset(shared_data, tmp_path):
    manifest = tmp_path / "split.json"
    result = runner.invoke(
        app, ["data", "split", "securebreak", "--out", str(manifest), "--data-dir", str(shared_data)]
    )
    assert result.exit_code == 0, result.output
    out = tmp_path / "test.jsonl"
    result = runner.invoke(
        app,
        [
            "data",
            "export",
            "securebreak",
            "--manifest",
            str(manifest),
            "--subset",
            "test",
            "--dedup",
            "any-unsafe",
            "--out",
            str(out),
            "--data-dir",
            str(shared_data),
        ],
    )
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    ids = set(json.loads(manifest.read_text())["ids"]["test"])
    assert (
        rows
        and {r["id"] for r in rows} <= ids
        and len({(r["prompt"], r["response"]) for r in rows}) == len(rows)
    )


def test_cli_export_parquet_of_a_user_file(tmp_path):
    import pyarrow.parquet as pq

    source = tmp_path / "mine.csv"
    source.write_text("question,answer,harm\nq1,a1,1\nq2,a2,0\n")
    out = tmp_path / "mine.parquet"
    result = runner.invoke(
        app,
        [
            "data",
            "export",
            str(source),
            "--format",
            "parquet",
            "--out",
            str(out),
            "--prompt-col",
            "question",
            "--response-col",
            "answer",
            "--label-col",
            "harm",
        ],
    )
    assert result.exit_code == 0, result.output
    assert pq.read_table(out).column("label").to_pylist() == ["unsafe", "safe"]


def test_cli_error_is_one_line_and_nonzero(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,response,label\na,b,perhaps\n")
    proc = subprocess.run(
        [sys.executable, "-m", "seawall", "data", "stats", str(bad)], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert "error:" in proc.stderr and "row 2, column label" in proc.stderr and "Traceback" not in proc.stderr
