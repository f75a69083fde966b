"""The Ray engine on a local 2-CPU Ray instance: the same rows, scores and bad-row report as the local engine."""

from __future__ import annotations

import gzip
import json
import logging
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from seawall.cli import app
from seawall.detect import make_detector
from seawall.detect.batch import DetectorSpec, filter_file, filter_outputs, partial_path, predict_file
from seawall.errors import DataError

BAD_LINES = {
    4: b"{not json",
    9: b'{"prompt": "hello"}',
    30: b'{"prompt": "hello", "response": ["a list"]}',
    61: b"\xff\xfe not utf-8",
    62: b"",
    100: b'{"prompt": {"a": 1}, "response": "fine"}',
}


@pytest.fixture(scope="session")
def ray_cluster():
    """A local Ray instance with 2 CPUs for the whole session, shut down at the end."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def detector_dir(sb_split, tmp_path_factory) -> Path:
    """A real tfidf detector (with its risk-category model) fitted on a few hundred SecureBreak rows."""
    folder = tmp_path_factory.mktemp("ray") / "tfidf"
    make_detector("tfidf").fit(sb_split["train"][:300], dev=sb_split["dev"][:150]).save(folder)
    return folder


def _rows(sb_split, n: int) -> list[dict]:
    test = sb_split["test"]
    return [{"prompt": r.prompt, "response": r.response, "rid": r.id} for r in test[:n]]


def _same_report(ray_report: dict, local_report: dict) -> None:
    def strip(report: dict) -> dict:
        return {k: v for k, v in report.items() if k not in ("output", "outputs")}

    assert json.loads(json.dumps(strip(ray_report))) == json.loads(json.dumps(strip(local_report)))


def test_predict_on_ray_matches_the_local_engine(ray_cluster, detector_dir, sb_split, tmp_path):
    lines = [json.dumps(row).encode() for row in _rows(sb_split, 150)]
    for number, raw in BAD_LINES.items():
        lines[number - 1] = raw
    (tmp_path / "in.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    spec = DetectorSpec(str(detector_dir))

    local = predict_file(str(tmp_path / "in.jsonl"), tmp_path / "local.parquet", spec, batch_size=16)
    # 150 lines, 2 workers, batch 16: eight line ranges of 19 lines, found by the offset scan.
    on_ray = predict_file(
        str(tmp_path / "in.jsonl"), tmp_path / "ray.parquet", spec, engine="ray", batch_size=16, workers=2
    )
    expected, got = pq.read_table(tmp_path / "local.parquet"), pq.read_table(tmp_path / "ray.parquet")
    assert got.column("row").to_pylist() == [n for n in range(1, 151) if n != 62]
    assert got.drop_columns(["p_unsafe"]).equals(expected.drop_columns(["p_unsafe"]))
    assert got.column("p_unsafe").to_pylist() == pytest.approx(
        expected.column("p_unsafe").to_pylist(), abs=1e-6, nan_ok=False
    )
    _same_report(on_ray, local)
    assert on_ray["bad"] == 5 and on_ray["blank_lines"] == 1 and on_ray["scored"] == 144


def test_filter_on_ray_from_the_command_line_matches_the_local_engine(
    ray_cluster, detector_dir, sb_split, tmp_path
):
    rows = _rows(sb_split, 120)
    table = pa.table(
        {
            "id": pa.array(range(120), pa.int64()),
            "prompt": [r["prompt"] for r in rows],
            "response": [None if i in (3, 77) else r["response"] for i, r in enumerate(rows)],
        }
    )
    # Row groups of 50, 50 and 20 rows; batches of 10 for 2 workers: slices of 15 rows (50 = 15 + 15 + 15 + 5).
    pq.write_table(table, tmp_path / "set.parquet", row_group_size=50)
    local = filter_file(
        str(tmp_path / "set.parquet"),
        tmp_path / "local" / "clean.parquet",
        DetectorSpec(str(detector_dir)),
        batch_size=10,
    )
    command = ["detect", "filter", str(tmp_path / "set.parquet"), "--detector", str(detector_dir)]
    ray_clean = str(tmp_path / "ray" / "clean.parquet")
    result = CliRunner().invoke(
        app, [*command, "--out", ray_clean, "--engine", "ray", "--workers", "2", "--batch-size", "10"]
    )
    assert result.exit_code == 0, result.output
    local_paths = filter_outputs(tmp_path / "local" / "clean.parquet")
    ray_paths = filter_outputs(ray_clean)
    assert pq.read_table(ray_paths["clean"]).equals(pq.read_table(local_paths["clean"]))
    for kind in ("dropped", "bad"):
        assert ray_paths[kind].read_bytes() == local_paths[kind].read_bytes(), kind
    _same_report(json.loads(ray_paths["report"].read_text()), local)
    assert local["bad_by_reason"] == {"missing response": 2}


def test_a_failing_read_on_ray_keeps_the_same_rows_and_raises_the_same_error(
    ray_cluster, detector_dir, sb_split, tmp_path
):
    test = sb_split["test"]
    rows = [{"prompt": r.prompt, "response": r.response} for r in (test[i % len(test)] for i in range(3000))]
    data = gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in rows))
    (tmp_path / "set.jsonl.gz").write_bytes(data[: len(data) // 2])
    spec = DetectorSpec(str(detector_dir))

    def failed_run(engine: str) -> tuple[str, list[dict]]:
        out = tmp_path / engine / "scores.jsonl"
        with pytest.raises(DataError) as failure:
            predict_file(str(tmp_path / "set.jsonl.gz"), out, spec, engine=engine, batch_size=100, workers=1)
        assert not out.exists()
        return str(failure.value), [json.loads(line) for line in partial_path(out).read_text().splitlines()]

    local_error, local_rows = failed_run("local")
    ray_error, ray_rows = failed_run("ray")
    assert re.search(r"set\.jsonl\.gz: unreadable after line \d+ .*ray/scores\.partial\.jsonl", ray_error)
    assert ray_error.replace("/ray/", "/local/") == local_error
    assert len(ray_rows) >= 100 and len(ray_rows) % 100 == 0  # every whole batch read before the failure
    assert [r["row"] for r in ray_rows] == [r["row"] for r in local_rows]
    assert [r["p_unsafe"] for r in ray_rows] == pytest.approx([r["p_unsafe"] for r in local_rows], abs=1e-6)
