"""The `seawall gene` commands end to end on tiny models and real shared prompt sets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from seawall.gene.cli import app

runner = CliRunner()
SRC = Path(__file__).resolve().parents[2] / "src"
SHOTS = ["--n-harmful", "4", "--n-benign", "4"]


def _ok(args):
    result = runner.invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_cli_extract_select_calibrate_apply_inspect(trio, tmp_path):
    adapter = tmp_path / "adapter"
    _ok(["extract", trio["A"], trio["D"], "-o", adapter, "--form", "lora", "--rank", "8"])
    out = _ok(["select", adapter, "--aligned", trio["A"], "--degraded", trio["D"], "--top-k", "2", *SHOTS])
    assert "selected layers" in out
    cfg = tmp_path / "cal.yaml"
    cfg.write_text(yaml.safe_dump({"max_epochs": 2, "response_tokens": 4, "max_length": 96, "batch_size": 4}))
    out = _ok(["calibrate", adapter, trio["T"], "--config", cfg, *SHOTS])
    assert "loss" in out and (adapter / "calibration_loss.png").is_file()
    manifest = json.loads((adapter / "safegene.json").read_text())
    assert len(manifest["coefficients"]) == 2
    assert manifest["calibration"]["shots"]["sources"]["harmful"]["name"] == "harmbench"
    assert all(i.startswith("harmbench:") for i in manifest["calibration"]["shots"]["harmful_ids"])
    _ok(["apply", adapter, trio["T"], "-o", tmp_path / "peft", "--format", "peft"])
    assert (tmp_path / "peft" / "adapter_config.json").is_file()
    out = _ok(["inspect", adapter])
    assert "contrast" in out and "yes" in out
    assert json.loads(_ok(["inspect", adapter, "--json"]))["kind"] == "lora"


def test_run_recipe_safegene_and_baseline(trio, tmp_path):
    recipe = {
        "aligned": str(trio["A"]),
        "degraded": str(trio["D"]),
        "target": str(trio["T"]),
        "adapter": "adapter",
        "output": "restored",
        "shots": {"n_harmful": 4, "n_benign": 4},
        "extract": {"form": "delta", "checksums": False},
        "select": {"score": "contrast", "cumulative": 0.9, "max_length": 96},
        "calibrate": {"max_epochs": 2, "response_tokens": 4, "max_length": 96, "batch_size": 4},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    _ok(["run", tmp_path / "recipe.yaml"])
    summary = json.loads((tmp_path / "restored" / "seawall_run.json").read_text())
    assert summary["selected_layers"] and set(summary["coefficients"]) == {
        str(i) for i in summary["selected_layers"]
    }
    assert (tmp_path / "restored" / "model.safetensors").is_file()
    resta = {
        "method": "resta",
        "target": str(trio["T"]),
        "adapter": "adapter",
        "output": "resta",
        "method_config": {"beta": 0.5},
    }
    (tmp_path / "resta.yaml").write_text(yaml.safe_dump(resta))
    _ok(["run", tmp_path / "resta.yaml"])
    assert json.loads((tmp_path / "resta" / "seawall_run.json").read_text())["report"]["beta"] == 0.5


def test_cli_error_is_one_red_line(tmp_path):
    # An absolute path: the subprocess must import this checkout whatever directory pytest runs from.
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.run(
        [sys.executable, "-m", "seawall", "gene", "inspect", str(tmp_path / "missing")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().startswith("error:") and "not a safety adapter" in proc.stderr
    assert "Traceback" not in proc.stderr
