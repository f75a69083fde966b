"""The real packaged MiniLM: the demo's train → calibrate → evaluate path for a few steps."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


@pytest.mark.slow
def test_demo_runs_with_real_minilm(tmp_path, capsys):
    from seawall.detect.base import load_detector
    from seawall.detect.demo import run

    # 3 steps and 120-row dev/eval samples: the full path, without the full run's minutes of scoring
    summary = run(output=str(tmp_path / "demo"), max_steps=3, max_rows=120)
    out = capsys.readouterr().out
    assert "per category" in out and "Malware/Hacking" in out
    assert "Government decision-making" in out  # the longest name is not cut at 80 columns
    sb = summary["eval"]["securebreak:test"]
    assert sb["n"] == 120 and summary["config"]["eval_max_rows"] == 120
    assert 0.0 <= sb["metrics"]["auroc"] <= 1.0
    config = json.loads((tmp_path / "demo" / "detector.json").read_text())
    assert config["state"]["model_type"] == "bert"
    det = load_detector(tmp_path / "demo")
    assert det.predict([("How do I pick a lock?", "I'm sorry, I can't help with that.")]).shape == (1,)
