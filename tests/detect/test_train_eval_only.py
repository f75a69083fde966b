"""`seawall detect train --eval-only`: an interrupted evaluation needs no second training. The saved detector is
evaluated only when it was trained from the same config (its run.json), and the summary keeps the training time."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from seawall.cli import app
from seawall.detect.pipeline import RUN_RECORD, TrainConfig, run_training, training_fingerprint
from seawall.errors import SeawallError


def _config(folder, **changes) -> TrainConfig:
    base = {
        "name": "tfidf-sb",
        "backend": "tfidf",
        "data": {"sets": ["securebreak"], "benign_compliant": 100},
        "output": str(folder / "detector"),
        "report_dir": str(folder / "eval"),
        "eval_sets": ["securebreak:test"],
        "n_boot": 50,
        "category_prompt_sets": [],
    }
    return TrainConfig.model_validate({**base, **changes})


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("eval-only")
    config = _config(folder)
    return folder, config, run_training(config)


def test_a_training_records_its_config_and_time(trained):
    folder, config, summary = trained
    record = json.loads((folder / "detector" / RUN_RECORD).read_text())
    assert record == {
        "name": "tfidf-sb",
        "training_fingerprint": training_fingerprint(config),
        "train_seconds": summary["train_seconds"],
    }


def test_eval_only_scores_the_saved_detector_without_training(trained, monkeypatch):
    folder, config, first = trained
    # Other evaluation sets are not part of what was trained: allowed.
    again = config.model_copy(update={"eval_sets": ["securebreak:test", "alpaca:test"]})

    def no_training(*args, **kwargs):
        raise AssertionError("eval-only trained a detector")

    monkeypatch.setattr("seawall.detect.pipeline.make_detector", no_training)
    summary = run_training(again, eval_only=True)
    assert summary["train_seconds"] == first["train_seconds"]
    assert summary["detector_id"] == first["detector_id"] and summary["threshold"] == first["threshold"]
    assert summary["eval"]["securebreak:test"]["metrics"] == first["eval"]["securebreak:test"]["metrics"]
    assert set(summary["eval"]) == {"securebreak:test", "alpaca:test"}
    assert json.loads((folder / "eval" / "summary.json").read_text())["eval"].keys() == summary["eval"].keys()


def test_eval_only_refuses_a_detector_of_another_config(trained):
    _, config, _ = trained
    changed = config.model_copy(update={"data": config.data.model_copy(update={"benign_compliant": 200})})
    with pytest.raises(SeawallError, match="trained from another config"):
        run_training(changed, eval_only=True)


def test_eval_only_without_a_saved_run_names_the_folder(tmp_path):
    config = _config(tmp_path)
    with pytest.raises(SeawallError, match=f"{tmp_path / 'detector'} holds no run.json"):
        run_training(config, eval_only=True)


def test_the_cli_flag(trained, tmp_path):
    _, config, first = trained
    path = tmp_path / "detector-tfidf-sb.yaml"
    path.write_text(json.dumps(config.model_dump()))  # JSON is YAML
    result = CliRunner().invoke(app, ["detect", "train", "--config", str(path), "--eval-only"])
    assert result.exit_code == 0, result.output
    assert f"evaluated the saved {config.output}" in result.output
    assert f"trained in {first['train_seconds']} s" in result.output
