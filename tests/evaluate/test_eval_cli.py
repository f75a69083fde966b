from typer.testing import CliRunner

from seawall.cli import app
from seawall.errors import SeawallError

runner = CliRunner()


def test_lab_and_eval_groups_are_registered():
    for group, commands in {
        "lab": ("align", "degrade", "customize"),
        "eval": ("safety", "overrefusal", "utility", "run", "report"),
    }.items():
        result = runner.invoke(app, [group, "--help"])
        assert result.exit_code == 0
        assert all(command in result.output for command in commands)


def test_report_on_a_folder_without_results_names_the_file(tmp_path):
    result = runner.invoke(app, ["eval", "report", str(tmp_path)])
    assert isinstance(result.exception, SeawallError)
    assert "results.json not found" in str(result.exception)


def test_lab_config_errors_name_the_field(tmp_path):
    config = tmp_path / "align.yaml"
    config.write_text("train:\n  lora_r: 0\n")
    result = runner.invoke(app, ["lab", "align", "--output", str(tmp_path / "out"), "--config", str(config)])
    assert isinstance(result.exception, SeawallError) and "lora_r" in str(result.exception)
