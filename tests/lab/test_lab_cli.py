"""`seawall lab customize` on a tiny model and the shared data: a config file's data section is honoured."""

import json

from typer.testing import CliRunner

from seawall.cli import app
from seawall.errors import SeawallError

runner = CliRunner()

CONFIG = """
data:
  task: ag_news
  n_train: 4
  harmful_share: 0.25
train:
  max_steps: 1
  batch_size: 2
  grad_accum: 1
  max_length: 256
"""


def _customize(tmp_path, tiny_model, shared_data, *flags):
    config = tmp_path / "customize.yaml"
    config.write_text(CONFIG)
    output = tmp_path / "out"
    args = ["lab", "customize", "--config", str(config), "--output", str(output)]
    args += ["--model", str(tiny_model), "--data-dir", str(shared_data), *flags]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads((output / "record.json").read_text())


def test_customize_takes_task_share_and_size_from_the_config(tmp_path, tiny_model, shared_data):
    record = _customize(tmp_path, tiny_model, shared_data)
    assert record["recipe"] == "customize-ag_news"
    data = record["config"]["data"]
    assert (data["task"], data["n_train"], data["harmful_share"]) == ("ag_news", 4, 0.25)
    assert record["data_report"]["n_harmful"] == 1


def test_customize_flags_override_only_what_they_name(tmp_path, tiny_model, shared_data):
    record = _customize(tmp_path, tiny_model, shared_data, "--n-train", "6")
    data = record["config"]["data"]
    assert (data["task"], data["n_train"], data["harmful_share"]) == ("ag_news", 6, 0.25)


def test_customize_bad_flag_is_a_seawall_error(tmp_path):
    result = runner.invoke(
        app, ["lab", "customize", "--output", str(tmp_path / "out"), "--harmful-share", "1.5"]
    )
    assert isinstance(result.exception, SeawallError) and "harmful_share" in str(result.exception)
