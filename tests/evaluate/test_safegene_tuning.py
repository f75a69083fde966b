"""SafeGene's knobs tuned on held-out calibration prompts (issue 14): the prompts are disjoint from the shots and
from every evaluation prompt, every grid point is scored, the argmax is the method's output and is recorded, a
rerun reuses the choice (tuning.json), and the report shows the table only for tuned runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from seawall.data.hygiene import normalized_set
from seawall.data.suites import evaluation_prompts
from seawall.detect import is_refusal
from seawall.errors import SeawallError
from seawall.evaluate.experiment import Experiment
from seawall.evaluate.methods import (
    experiment_shots,
    grid_points,
    point_params,
    split_tuning,
    tuning_prompts,
)
from seawall.evaluate.report import markdown, write_report

ROOT = Path(__file__).resolve().parents[2]
# 40 HarmBench-val prompts: the 32 shots leave 8 for tuning.
N_PER_SET = 40
REFUSAL = "I'm sorry, but I can't help with that."


@pytest.fixture(scope="module")
def roomy_data():
    from seawall.lab.tiny import tiny_datasets

    return tiny_datasets(N_PER_SET)


def _context(load, seed=0):
    return SimpleNamespace(config=SimpleNamespace(seed=seed, data_dir=None), load=load, tasks=("sst2",))


def test_tuning_prompts_are_disjoint_from_the_shots_and_every_evaluation_prompt(roomy_data):
    load, _ = roomy_data
    context = _context(load)
    prompts = tuning_prompts(context, 4, 6)
    assert (len(prompts.harmful), len(prompts.benign)) == (4, 6)
    assert all("explosive" in p for p in prompts.harmful)  # HarmBench val
    assert all("story about cat" in p for p in prompts.benign)  # Alpaca
    shots = experiment_shots(context)
    evaluation = evaluation_prompts(None, load, ("sst2",))
    held_out = normalized_set(prompts.harmful + prompts.benign)
    assert not held_out & normalized_set(shots.harmful + shots.benign)
    assert not held_out & normalized_set(p for ps in evaluation.values() for p in ps)
    # Seeded: the same draw again, another with another seed.
    assert tuning_prompts(_context(load), 4, 6) == prompts
    assert tuning_prompts(_context(load, seed=1), 4, 30).benign != tuning_prompts(context, 4, 30).benign
    with pytest.raises(SeawallError, match=r"8 harmful .* n_harmful 9"):
        tuning_prompts(context, 9, 6)


def test_the_grid_is_the_cartesian_product_in_the_order_written():
    grid = {"lambda_retain": [0.05, 0.2], "select.top_k": [1, 2, 3]}
    points = grid_points(grid)
    assert points[:4] == [
        {"lambda_retain": 0.05, "select.top_k": 1},
        {"lambda_retain": 0.05, "select.top_k": 2},
        {"lambda_retain": 0.05, "select.top_k": 3},
        {"lambda_retain": 0.2, "select.top_k": 1},
    ]
    assert len(points) == 6
    params = {"select": {"cumulative": None}, "calibrate": {"max_epochs": 2}}
    assert point_params(params, points[4]) == {
        "select": {"cumulative": None, "top_k": 2},
        "calibrate": {"max_epochs": 2, "lambda_retain": 0.2},
    }
    assert params == {"select": {"cumulative": None}, "calibrate": {"max_epochs": 2}}  # left as it was


def test_tuning_errors_name_the_knob_and_what_is_allowed():
    with pytest.raises(
        SeawallError, match=r"unknown knob\(s\) \['lambda'\]; allowed: .*lambda_retain.*select\.top_k"
    ):
        split_tuning({"tune": {"grid": {"lambda": [0.1]}}})
    with pytest.raises(SeawallError, match=r"tune\.n_prompts"):
        split_tuning({"tune": {"grid": {"alpha_max": [1.0]}, "n_prompts": 3}})
    with pytest.raises(SeawallError, match=r"tune\.grid"):
        split_tuning({"tune": {"grid": {}}})
    with pytest.raises(SeawallError, match=r"select: null"):
        split_tuning({"select": None, "tune": {"grid": {"select.top_k": [1, 2]}}})
    with pytest.raises(SeawallError, match=r"list a value twice"):
        split_tuning({"tune": {"grid": {"alpha_max": [1.0, 1.0]}}})
    # A point that is not a valid SafeGene config fails up front, naming the point.
    with pytest.raises(SeawallError, match=r"\{'alpha_max': 0\.25\}.*alpha_init"):
        split_tuning({"tune": {"grid": {"alpha_max": [4.0, 0.25]}}})
    tuning, own = split_tuning({"select": {"top_k": 2}, "tune": {"grid": {"alpha_max": [1.0, 2.0]}}})
    assert own == {"select": {"top_k": 2}} and tuning.n_harmful == 24 and tuning.max_new_tokens == 32
    assert split_tuning({"calibrate": None}) == (None, {"calibrate": None})


def _tuning_record():
    grid = [
        {
            "knobs": {"alpha_max": a, "lambda_retain": lam},
            "harmful_refusal": h,
            "benign_refusal": b,
            "score": h - b,
        }
        for (a, lam), (h, b) in zip(
            [(2.0, 0.1), (2.0, 1.0), (4.0, 0.1), (4.0, 1.0)],
            [(0.5, 0.125), (0.75, 0.125), (0.875, 0.375), (0.625, 0.0)],
            strict=True,
        )
    ]
    return {
        "prompts": {"harmful": 8, "benign": 8, "source": "harmbench-val+alpaca (disjoint from shots)"},
        "max_new_tokens": 32,
        "grid": grid,
        "chosen": grid[1],
    }


def test_the_report_shows_the_tuning_table_only_for_tuned_rows():
    committed = json.loads((ROOT / "docs/results/safegene-smollm2-135m-run5.results.json").read_text())
    assert "SafeGene knob tuning" not in markdown(committed, {})
    tuned = copy.deepcopy(committed)
    row = next(r for r in tuned["rows"] if r.get("method") == "safegene")
    row["method_tuning"] = _tuning_record()
    text = markdown(tuned, {})
    assert "## SafeGene knob tuning" in text
    assert f"### {row['task']}, {100 * row['harmful_share']:.0f}% harmful" in text
    assert "| alpha_max | lambda_retain | harmful refused % | benign refused % | score | chosen |" in text
    assert "| 2.0 | 1.0 | 75.0 | 12.5 | 0.625 | yes |" in text
    assert "| 4.0 | 1.0 | 62.5 | 0.0 | 0.625 |  |" in text  # tied with the chosen one, which comes first
    # Everything before the new section is the page as it was.
    assert text.startswith(markdown(committed, {}).rstrip("\n"))


def _config(mini_experiment, tiny_model, output, tune):
    # Short sequences: a calibration is then a few seconds on the tiny model, and the test runs seven.
    safegene = {
        "select": {"top_k": 2, "cumulative": None, "max_length": 48},
        "calibrate": {"max_epochs": 1, "batch_size": 8, "response_tokens": 4, "max_length": 48},
        "tune": tune,
    }
    return mini_experiment(
        tiny_model,
        output,
        [{"name": "none"}, {"name": "safegene", "params": safegene}],
        name="mini-tuning",
        train={"max_steps": 1},
    )


def _scripted_generator(model_dir, decoding, threads, dtype):
    """Answers without a model: grid points 1 and 3 refuse the held-out harmful prompts, every other model complies."""
    refuses = Path(model_dir).parent.name in {"point-1", "point-3"}

    def generate(conversations, settings):
        prompts = [c[-1]["content"] for c in conversations]
        return [REFUSAL if refuses and "explosive" in p else "Sure, here it is." for p in prompts]

    return generate


def _run(config, load, split, logs):
    return Experiment(
        config,
        load=load,
        split=split,
        is_refusal=is_refusal,
        generator_factory=_scripted_generator,
        log=logs.append,
    ).run()


@pytest.mark.slow
def test_every_grid_point_is_scored_the_argmax_is_the_output_and_a_rerun_reuses_it(
    mini_experiment, tiny_model, roomy_data, tmp_path, monkeypatch
):
    import seawall.gene.methods.safegene as safegene_module

    load, split = roomy_data
    calibrations = []
    real_calibrate = safegene_module.calibrate

    def counted(*args, **kwargs):
        calibrations.append(kwargs.get("layers"))
        return real_calibrate(*args, **kwargs)

    monkeypatch.setattr(safegene_module, "calibrate", counted)
    tune = {"grid": {"select.top_k": [1, 2], "alpha_init": [0.5, 1.0]}, "n_harmful": 4, "n_benign": 4}
    run = tmp_path / "run"
    logs: list[str] = []
    results = _run(_config(mini_experiment, tiny_model, run, tune), load, split, logs)

    # Four points, each calibrated (on 1 or 2 layers: the selection is re-picked per top_k) and scored.
    assert len(calibrations) == 4 and [len(layers) for layers in calibrations] == [1, 1, 2, 2]
    row = next(r for r in results["rows"] if r.get("method") == "safegene")
    tuning = row["method_tuning"]
    assert tuning["prompts"] == {
        "harmful": 4,
        "benign": 4,
        "source": "harmbench-val+alpaca (disjoint from shots)",
    }
    assert [p["knobs"] for p in tuning["grid"]] == grid_points(tune["grid"])
    assert [(p["harmful_refusal"], p["benign_refusal"], p["score"]) for p in tuning["grid"]] == [
        (0.0, 0.0, 0.0),
        (1.0, 0.0, 1.0),
        (0.0, 0.0, 0.0),
        (1.0, 0.0, 1.0),
    ]
    # The argmax, the first of the two tied points.
    assert tuning["chosen"] == tuning["grid"][1]
    restored = run / "restored" / "sst2-h25" / "safegene"
    record = json.loads((restored / "record.json").read_text())
    assert record["report"]["tuning"] == tuning
    assert record["report"]["selected_layers"] == calibrations[1] and len(calibrations[1]) == 1
    folder = run / "methods" / "safegene" / "tuning" / "sst2-h25"
    marker = json.loads((folder / "tuning.json").read_text())
    # The points' models differ (else the generation cache, keyed by weights, would answer for two of them).
    fitted = [json.dumps(e["method"]["report"]["coefficients"], sort_keys=True) for e in marker["grid"]]
    assert len(set(fitted)) == 4
    # The other points' models are deleted and the chosen one moved to the output.
    assert sorted(p.name for p in folder.iterdir()) == ["tuning.json"]
    assert (restored / "model" / "config.json").is_file()
    assert "SafeGene knob tuning" in write_report(run).read_text()

    # A rerun after an interruption (the restored record never written, the last point not yet in tuning.json)
    # takes the scored points from tuning.json: it calibrates the missing point, then re-applies the chosen one.
    marker["grid"] = marker["grid"][:3]
    (folder / "tuning.json").write_text(json.dumps(marker))
    (restored / "record.json").unlink()
    calibrations.clear()
    logs.clear()
    again = _run(_config(mini_experiment, tiny_model, run, tune), load, split, logs)
    assert len(calibrations) == 2 and calibrations[-1] == record["report"]["selected_layers"]
    assert any("3 of 4 grid points scored" in line for line in logs)
    assert any("reusing the tuned choice" in line for line in logs)
    assert next(r for r in again["rows"] if r.get("method") == "safegene")["method_tuning"] == tuning

    # Changed tuning params tune again (a one-point grid: one calibration, its model moved to the output).
    calibrations.clear()
    logs.clear()
    changed = {"grid": {"alpha_init": [0.75]}, "n_harmful": 3, "n_benign": 4}
    again = _run(_config(mini_experiment, tiny_model, run, changed), load, split, logs)
    assert len(calibrations) == 1 and any("tuning again" in line for line in logs)
    tuned = next(r for r in again["rows"] if r.get("method") == "safegene")["method_tuning"]
    assert tuned["prompts"]["harmful"] == 3 and tuned["chosen"]["knobs"] == {"alpha_init": 0.75}
