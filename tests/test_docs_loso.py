"""docs/results/detector-loso.md is exactly what `scripts/detector_loso.py --page` renders from the committed JSON."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("detector_loso", ROOT / "scripts" / "detector_loso.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_loso_page_regenerates_from_its_json(monkeypatch):
    page = (ROOT / "docs/results/detector-loso.md").read_text(encoding="utf-8")
    folders = re.search(r"--page docs/results/detector-loso\.md ([^`]+)`", page).group(1).split()
    assert folders, "the page names the run folders it was generated from"
    monkeypatch.chdir(ROOT)
    assert _script().render_page(folders) == page
