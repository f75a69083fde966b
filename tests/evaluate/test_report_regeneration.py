"""Experiment pages regenerate byte for byte from a results.json alone (issue 14, "reproducible").

Every committed docs/results/NAME.results.json must give back the committed docs/results/NAME.md; a results.json made
here (two judges, a SafeGene row with per-layer coefficients) must give the same page from any folder, with no
machine path or timestamp in it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seawall.cli import app
from seawall.evaluate.report import write_report

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = sorted((ROOT / "docs" / "results").glob("*.results.json"))
# A folder path as a machine prints it (/tmp/…, /work/…, /home/…, C:\…), and a date or a clock time.
ABSOLUTE_PATH = re.compile(r"(?:^|[\s`(\[\"'=])(?:/[\w.-]+/|[A-Za-z]:\\)")
TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}:\d{2}:\d{2}")


@pytest.mark.parametrize(
    "results",
    COMMITTED
    or [pytest.param(None, marks=pytest.mark.skip(reason="no docs/results/*.results.json committed yet"))],
    ids=lambda path: path.name if path else "none",
)
def test_committed_page_regenerates_byte_for_byte(results, tmp_path):
    page = results.with_name(results.name.removesuffix(".results.json") + ".md")
    assert page.is_file(), f"{results.relative_to(ROOT)} has no page beside it: seawall eval report it"
    regenerated = write_report(results, tmp_path / page.name)
    assert regenerated.read_bytes() == page.read_bytes(), (
        f"{page.relative_to(ROOT)} differs from what `seawall eval report {results.relative_to(ROOT)}` writes: "
        "regenerate it (never edit it by hand)"
    )
    assert f"seawall eval report {results.relative_to(ROOT).as_posix()}`" in page.read_text(encoding="utf-8")


def _reference(model, detector, refusal, detector_categories):
    return {
        "model": model,
        "hrr_detector": detector,
        "hrr_detector_ci95": [detector - 0.1, detector + 0.1],
        "hrr_refusal": refusal,
        "hrr_refusal_ci95": [refusal - 0.1, refusal + 0.1],
        "overrefusal": 0.05,
        "overrefusal_ci95": [0.0, 0.1],
        "utility_sst2": 0.9,
        "eval_wall_s": 12.5,
        "eval_dtype": "float32",
        "eval_dir": model,
        "category_hrr": {
            "detector": detector_categories,
            "refusal": {key: min(1.0, 2 * value) for key, value in detector_categories.items()},
        },
    }


def _target(method, detector, refusal, utility, **extra):
    return {
        "model": "target",
        "task": "sst2",
        "harmful_share": 0.05,
        "method": method,
        "hrr_detector": detector,
        "hrr_detector_ci95": [detector - 0.05, detector + 0.05],
        "hrr_refusal": refusal,
        "hrr_refusal_ci95": [refusal - 0.05, refusal + 0.05],
        "overrefusal": 0.1,
        "overrefusal_ci95": [0.0, 0.2],
        "utility_sst2": utility,
        "eval_wall_s": 3.25,
        "eval_dtype": "float32",
        "eval_dir": f"sst2-h5__{method}",
        "recovery_detector": (0.6 - detector) / 0.4,
        "recovery_refusal": (0.8 - refusal) / 0.6,
        "method_wall_s": None if method == "none" else 4.5,
        "method_peak_rss_mib": None if method == "none" else 900.0,
        **extra,
    }


def synthetic_results(machine: Path) -> dict:
    """A finished run as `seawall eval run` writes it, with machine paths wherever the config holds folders."""
    categories = {"harmbench-test:cybercrime": 0.5, "strongreject:violence": 0.25}
    return {
        "name": "synthetic",
        "config": {
            "name": "synthetic",
            "model": str(machine / "models" / "smollm2"),
            "output": str(machine / "runs" / "synthetic"),
            "eval": {
                "n_harmful_per_suite": 30,
                "n_benign_per_suite": 20,
                "n_task": 200,
                "decoding": {"max_new_tokens": 48},
                "detector": str(machine / "runs" / "detector" / "mpnet-v2"),
            },
        },
        "suites": {"safety": ["harmbench-test", "strongreject"], "overrefusal": ["xstest-safe"]},
        "complete": True,
        "rows": [
            _reference("original", 0.5, 0.9, categories),
            _reference("aligned", 0.2, 0.2, {key: value / 5 for key, value in categories.items()}),
            _reference("degraded", 0.7, 0.9, categories),
            _target("none", 0.6, 0.8, 0.9),
            _target("resta", 0.4, 0.6, 0.89),
            _target(
                "safegene",
                0.25,
                0.3,
                0.9,
                method_coefficients={"1.mlp": 0.5, "0.self_attn": 1.25, "embed": 2.0},
            ),
        ],
        "safegene_layer_scores": {"sensitivity": [0.1, 0.4, 0.2]},
    }


def _write(results: dict, folder: Path) -> Path:
    folder.mkdir(parents=True)
    path = folder / "synthetic.results.json"
    path.write_text(json.dumps(results, indent=2))
    return path


def test_a_page_is_made_from_results_json_alone_and_reads_the_same_from_any_folder(tmp_path):
    results = synthetic_results(tmp_path / "machine")
    first = _write(results, tmp_path / "one")
    # The same results.json elsewhere, with no run folder around it (no evals/, restored/, safety-adapter/).
    second = _write(results, tmp_path / "two" / "deeper")

    page = write_report(first)
    again = write_report(second, tmp_path / "elsewhere" / "synthetic.md")

    assert page == first.with_name("synthetic.md")
    text = page.read_text(encoding="utf-8")
    assert again.read_text(encoding="utf-8") == text
    assert write_report(first).read_text(encoding="utf-8") == text  # a second pass over the same file
    assert "Generated by `seawall eval report synthetic.results.json`" in text
    assert str(tmp_path) not in text and not ABSOLUTE_PATH.search(text), "the page names a machine folder"
    assert not TIMESTAMP.search(text), "the page holds a date or time"
    assert "detector judge `mpnet-v2`" in text and "each of harmbench-test, strongreject;" in text
    assert "| model | HRR detector % [95% CI] | HRR refusal % [95% CI] |" in text
    for section in (
        "Safety vs utility (detector judge)",
        "HRR per category (detector judge)",
        "Safety vs utility (refusal judge)",
        "HRR per category (refusal judge)",
        "SafeGene layer scores and coefficients",
    ):
        assert f"## {section}" in text, section
    # Every PNG the page shows is written beside it, from results.json too.
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", text)
    assert images == [
        "synthetic-scatter-detector.png",
        "synthetic-suites-detector.png",
        "synthetic-scatter-refusal.png",
        "synthetic-suites-refusal.png",
        "synthetic-safegene-layers.png",
    ]
    for name in images:
        assert (page.parent / name).stat().st_size > 1000
        assert (again.parent / name).stat().st_size > 1000


def test_a_results_json_saved_before_the_figures_data_reports_without_those_figures(tmp_path):
    results = synthetic_results(tmp_path / "machine")
    del results["suites"], results["safegene_layer_scores"]
    for row in results["rows"]:
        row.pop("category_hrr", None)
        row.pop("method_coefficients", None)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps(results))

    text = write_report(folder).read_text(encoding="utf-8")

    assert (folder / "REPORT.md").is_file()
    assert "Generated by `seawall eval report results.json`" in text
    assert "## Safety vs utility (refusal judge)" in text and "## Target: sst2" in text
    assert "HRR per category" not in text and "SafeGene layer scores" not in text
    # Today's suite list may hold suites added after the run: an old run names none rather than the wrong ones.
    assert "harmful prompts from each of the safety suites;" in text


def test_a_results_json_inside_the_repository_is_named_relative_to_it(tmp_path):
    repository = tmp_path / "checkout"
    (repository / ".git").mkdir(parents=True)
    results = _write(synthetic_results(tmp_path / "machine"), repository / "docs" / "results")

    text = write_report(results, tmp_path / "page.md").read_text(encoding="utf-8")

    assert "Generated by `seawall eval report docs/results/synthetic.results.json` from that file" in text


def test_the_command_takes_a_results_json_and_an_output_page(tmp_path):
    results = _write(synthetic_results(tmp_path / "machine"), tmp_path / "published")
    page = tmp_path / "pages" / "name.md"

    outcome = CliRunner().invoke(app, ["eval", "report", str(results), "--output", str(page)])

    assert outcome.exit_code == 0, outcome.output
    assert outcome.output.strip() == str(page)
    assert (page.parent / "name-scatter-refusal.png").is_file()
    missing = CliRunner().invoke(
        app, ["eval", "report", str(tmp_path / "published" / "nothing.results.json")]
    )
    assert missing.exit_code != 0 and "nothing.results.json not found" in str(missing.exception)
