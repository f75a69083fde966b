"""docs/scale.md's measured table is exactly what bench/detect_scale.py renders from its committed JSON."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("detect_scale", ROOT / "bench" / "detect_scale.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_scale_page_table_regenerates_from_the_bench_json():
    bench = _bench()
    doc = (ROOT / "docs/scale.md").read_text(encoding="utf-8")
    result = json.loads((ROOT / "bench/results/detect_scale.json").read_text())
    assert bench.with_results(doc, result) == doc
    assert str(result["local"]["rows_per_s"]) in doc


def test_a_page_without_the_markers_is_refused():
    with pytest.raises(SystemExit, match="no <!-- detect_scale:begin -->"):
        _bench().with_results("# no block here\n", {})
