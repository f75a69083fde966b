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
