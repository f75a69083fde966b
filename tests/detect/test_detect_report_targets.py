"""The issue-13 targets table of docs/results/detector.md: one row per run trained on the v2 mix."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from seawall.detect.report import build_report

RESULTS = Path(__file__).resolve().parents[2] / "docs" / "results" / "detector"


def _targets_section(text: str) -> list[str]:
    section = text.split("## Targets of issue 13 (every run on the v2 mix)", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| run")]


def test_every_v2_mix_run_gets_a_targets_row_and_others_none(tmp_path):
    for name in ("encoder-v2", "encoder-mix"):
        shutil.copytree(RESULTS / name, tmp_path / name)
    rows = _targets_section(build_report(tmp_path))
    assert [row.split(" | ")[0] for row in rows] == ["| encoder-v2"]  # encoder-mix has no dialogue sets
    summary = json.loads((RESULTS / "encoder-v2" / "summary.json").read_text())
    auroc = summary["eval"]["securebreak:test"]["metrics"]["auroc"]
    assert f"{auroc:.3f} (**no**)" in rows[0]  # below the 0.93 bar
    assert rows[0].endswith("(yes) |")  # refusals flagged ≤ 1%


def test_no_v2_run_no_targets_section(tmp_path):
    shutil.copytree(RESULTS / "encoder-mix", tmp_path / "encoder-mix")
    assert "Targets of issue 13" not in build_report(tmp_path)


def _loso_rows(text: str) -> list[str]:
    section = text.split("## Leave-one-source-out: AUROC on each held-out source", 1)[1].split("\n## ", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| ")]


def test_the_loso_target_row_reads_each_held_out_sources_own_auroc(tmp_path):
    """From the committed LOSO JSON: the held-out source's AUROC on its own test rows, judged against 0.85; the
    whole-mix reference (`none`) and one-label sources (no AUROC) get no column."""
    shutil.copytree(RESULTS / "encoder-mix", tmp_path / "encoder-mix")
    shutil.copytree(RESULTS / "loso-tfidf-v2", tmp_path / "loso-tfidf-v2")
    header, row = _loso_rows(build_report(tmp_path))
    columns = [c.strip() for c in header.strip("|").split("|")]
    assert columns == [
        "run", "securebreak", "gptfuzz", "diasafety", "toxichat", "safetext", "openai-moderation",
    ]  # fmt: skip
    cells = dict(zip(columns, (c.strip() for c in row.strip("|").split("|")), strict=True))
    assert cells["run"] == "tfidf-v2 (tfidf)"
    for source in columns[1:]:
        held = json.loads((RESULTS / "loso-tfidf-v2" / f"{source}.json").read_text())
        auroc = held["eval"][source]["metrics"]["auroc"]
        assert cells[source] == f"{auroc:.3f} ({'yes' if auroc >= 0.85 else '**no**'})", source
    assert "(yes)" in row and "(**no**)" in row  # both verdicts occur, so the check could fail either way


def test_no_loso_folder_no_loso_section(tmp_path):
    shutil.copytree(RESULTS / "encoder-mix", tmp_path / "encoder-mix")
    assert "Leave-one-source-out: AUROC" not in build_report(tmp_path)
