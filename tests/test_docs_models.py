"""docs/models.md's tables are what scripts/models_doc.py renders from docs/models.json (no hand-typed numbers)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("models_doc", ROOT / "scripts" / "models_doc.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_models_doc_tables_are_rendered_from_the_json(tmp_path):
    doc = tmp_path / "models.md"
    shutil.copy(ROOT / "docs" / "models.md", doc)
    _script().render(ROOT / "docs" / "models.json", doc)
    assert doc.read_text() == (ROOT / "docs" / "models.md").read_text()


def test_render_writes_the_measured_values(tmp_path):
    script = _script()
    measured = json.loads((ROOT / "docs" / "models.json").read_text())["models"]
    name, entry = next(iter(measured.items()))
    doc = tmp_path / "models.md"
    markers = [script.PACKAGED_BEGIN, script.PACKAGED_END, script.TIMINGS_BEGIN, script.TIMINGS_END]
    doc.write_text("intro\n" + "\n".join(markers) + "\noutro\n")
    changed = {**entry, "provision_s": 123.4, "num_parameters": 7_000_000}
    (tmp_path / "models.json").write_text(json.dumps({"models": {name: changed}}))
    script.render(tmp_path / "models.json", doc)
    text = doc.read_text()
    assert f"| {name} | 123.4 s |" in text and "7.0M params" in text
    assert text.startswith("intro\n") and text.endswith("outro\n")
