"""scripts/gene_results.py writes every number from the benchmarks' JSON, none typed into the script."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("gene_results", ROOT / "scripts" / "gene_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shot_count_comes_from_the_json():
    result = json.loads((ROOT / "docs" / "results" / "gene_calibrate_cost.json").read_text())
    result["calibration"]["shots"] = {"harmful": 5, "benign": 3}
    text = "\n".join(_script().cost_section(result))
    assert "one pass over the 8 shots" in text and "64 shots" not in text
    assert "5 harmful + 3 benign prompts" in text
