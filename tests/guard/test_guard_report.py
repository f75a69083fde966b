"""scripts/guard_report.py: the results page says what the benchmark JSON measured, nothing typed by hand."""

from __future__ import annotations

import copy
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def report_module():
    spec = importlib.util.spec_from_file_location("guard_report", ROOT / "scripts" / "guard_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def render(tmp_path: Path, data: dict) -> str:
    src, out = tmp_path / "bench.json", tmp_path / "guard.md"
    src.write_text(json.dumps(data))
    report_module().main(str(src), str(out))
    return out.read_text()


def test_leak_sentence_follows_the_measured_leaked_chars(tmp_path):
    measured = json.loads((ROOT / "bench" / "results" / "guard_load.json").read_text())
    page = render(tmp_path, measured)
    worst = max(s["leaked_chars"] for s in measured["stream_tradeoff"])
    leaking = sum(s["leaked_chars"] > 0 for s in measured["stream_tradeoff"])
    assert "never sent" not in page
    if worst:
        assert f"at most {worst} characters" in page
        assert f"In {leaking} of {len(measured['stream_tradeoff'])} configurations" in page
    none_leaked = copy.deepcopy(measured)
    for row in none_leaked["stream_tradeoff"]:
        row["leaked_chars"], row["marker_leaked"] = 0, False
    assert "No character of the unsafe sentence reached the client" in render(tmp_path, none_leaked)
    word_leaked = copy.deepcopy(measured)
    word_leaked["stream_tradeoff"][0].update(leaked_chars=40, marker_leaked=True, blocked=False)
    page = render(tmp_path, word_leaked)
    assert "at most 40 characters" in page and "its start, reached the client in 1 configuration" in page
    assert "1 configuration(s) never blocked" in page


def test_baseline_is_not_cited_by_a_machine_local_path(tmp_path):
    measured = json.loads((ROOT / "bench" / "results" / "guard_load.json").read_text())
    outside = {**measured, "baseline_src": "/tmp/guard-before/src"}
    page = render(tmp_path, outside)
    assert "/tmp/guard-before" not in page and "outside the repository" in page
    inside = {**measured, "baseline_src": str(ROOT / "src")}
    assert "changes, from `src`, run" in render(tmp_path, inside)


def test_each_run_shows_its_recorded_batching_and_older_runs_render_as_before(tmp_path):
    measured = json.loads((ROOT / "bench" / "results" / "guard_load.json").read_text())
    measured.pop("batching", None)
    before = render(tmp_path, measured)
    assert "micro-batching" not in before
    batched = {**measured, "batching": {"batch_wait_ms": 2.0, "max_batch": 32, "max_inflight_batches": 1}}
    unbatched = {**measured, "batching": {"batch_wait_ms": 0.0, "max_batch": 32}}
    sources = [tmp_path / "batched.json", tmp_path / "unbatched.json", tmp_path / "old.json"]
    for path, data in zip(sources, [batched, unbatched, measured], strict=True):
        path.write_text(json.dumps(data))
    out = tmp_path / "runs.md"
    report_module().main(*(str(path) for path in [*sources[:1], out, *sources[1:]]))
    lines = out.read_text().splitlines()
    shown = [line for line in lines if "micro-batching" in line]
    assert shown == [
        "Proxy micro-batching: `batch_wait_ms` 2, `max_batch` 32, `max_inflight_batches` 1.",
        "Proxy micro-batching: `batch_wait_ms` 0, `max_batch` 32 (off: one detector call per check).",
    ]
    # Each line sits in its own run's section (the old run's has none), just above that run's table.
    for line, src in zip(shown, sources, strict=False):
        at = lines.index(line)
        heading = max(i for i in range(at) if lines[i].startswith("## "))
        assert f"(`{src}`)" in lines[heading] and lines[at + 2].startswith("| concurrency")
    # Apart from that line (and the blank after it), a run's page is the one its JSON without the key gives.
    page = render(tmp_path, batched).splitlines()
    at = page.index(shown[0])
    assert page[at + 1] == "" and page[:at] + page[at + 2 :] == before.splitlines()
