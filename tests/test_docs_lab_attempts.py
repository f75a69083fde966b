"""docs/lab.md's attempts table is what scripts/lab_attempts.py renders from docs/lab_attempts.json alone, and `add`
measures an attempt into the manifest from the files a training run and `seawall eval` write."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "lab_attempts.py"


def _script():
    spec = importlib.util.spec_from_file_location("lab_attempts", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_committed_table_is_rendered_from_the_manifest():
    script = _script()
    table = script.render(json.loads((ROOT / "docs" / "lab_attempts.json").read_text()))
    text = (ROOT / "docs" / "lab.md").read_text()
    assert f"{script.BEGIN}\n{table}\n{script.END}" in text


def _run(*args: str) -> str:
    done = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_add_then_render_without_the_run_folders(tmp_path):
    run = tmp_path / "A-dpo"
    run.mkdir()
    record = {
        "recipe": "align-dpo",
        "config": {
            "train": {"method": "lora", "lora_r": 16, "learning_rate": 2e-4, "epochs": 1},
            "dpo": {"learning_rate": 5e-5, "epochs": 2},
        },
        "data_report": {"pairs": {"detector": 90, "refusal": 150}},
        "steps": 60,
        "train_time_s": 600.0,
    }
    (run / "record.json").write_text(json.dumps(record))
    rate = {"rate": 0.25, "ci95": [0.175, 0.333], "n": 120}
    safety = tmp_path / "safety.json"
    safety.write_text(
        json.dumps({"judges": {"refusal": {"hrr": rate}, "detector": {"hrr": {**rate, "rate": 0.1}}}})
    )
    over = tmp_path / "over.json"
    over.write_text(json.dumps({"rate": {"rate": 0.05, "ci95": [0.0, 0.1], "n": 80}}))
    manifest = tmp_path / "attempts.json"
    row = _run("add", str(manifest), "--label", "A-dpo", "--train", str(run), "--safety", str(safety),
               "--overrefusal", str(over), "--note", "a | b")  # fmt: skip
    assert row.strip() == (
        "| A-dpo | lora r16 lr 5e-05, 2 ep, 60 steps; DPO pairs detector 90, refusal 150 | 10 | 25.0% [18–33] (n=120) "
        "| 10.0% [18–33] (n=120) | 5.0% [0–10] (n=80) | a / b |"
    )
    for path in (run / "record.json", safety, over):
        path.unlink()  # render needs none of them
    doc = tmp_path / "lab.md"
    script = _script()
    doc.write_text(f"intro\n{script.BEGIN}\nold\n{script.END}\noutro\n")
    _run("render", str(manifest), "--doc", str(doc))
    table = "\n".join([*script.HEADER, row.strip()])
    assert doc.read_text() == f"intro\n{script.BEGIN}\n{table}\n{script.END}\noutro\n"
    # adding the same label again replaces its row instead of duplicating it
    entries = json.loads(manifest.read_text())
    assert [e["label"] for e in entries] == ["A-dpo"] and entries[0]["measured_from"]["train"] == str(run)


def test_add_from_an_experiment_row_and_bad_model(tmp_path):
    results = ROOT / "docs" / "results" / "safegene-smollm2-135m-run5.results.json"
    manifest = tmp_path / "attempts.json"
    row = _run("add", str(manifest), "--label", "o", "--experiment", str(results), "--model", "original")
    assert row.startswith("| o | as shipped | – | ") and "(n=120)" in row and "(n=80)" in row
    with pytest.raises(AssertionError, match="no row for model 'nope'"):
        _run("add", str(manifest), "--label", "x", "--experiment", str(results), "--model", "nope")
