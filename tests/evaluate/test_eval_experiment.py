import json

import pytest

from seawall.detect import is_refusal
from seawall.errors import SeawallError
from seawall.evaluate.experiment import Experiment, MethodSpec, load_config
from seawall.evaluate.report import write_report


def mini_config(mini_experiment, tiny_model, output, methods, detector=None):
    return mini_experiment(
        tiny_model,
        output,
        methods,
        align_data={"n_hh_refusals": 2, "n_benign": 6},
        eval={
            "n_harmful_per_suite": 2,
            "n_benign_per_suite": 2,
            "n_task": 4,
            "n_boot": 200,
            "detector": detector,
        },
    )


def _rerun_without_generation(config, load, split, calls):
    """Run again with a generator that only records calls: a finished run must not generate anything."""
    return Experiment(
        config,
        load=load,
        split=split,
        is_refusal=is_refusal,
        generator_factory=lambda *a: calls.append(a),
        log=lambda s: None,
    ).run()


@pytest.mark.slow
def test_mini_experiment_end_to_end_and_resume(mini_experiment, tiny_model, tiny_data, tmp_path):
    load, split = tiny_data
    from seawall.detect import make_detector

    detector = tmp_path / "detector"
    make_detector("tfidf").fit(split("securebreak")["train"]).save(detector)
    safegene = {
        "select": {"top_k": 2, "cumulative": None},
        "calibrate": {"max_epochs": 1, "batch_size": 4, "response_tokens": 4},
    }
    methods = [
        {"name": "none"},
        {"name": "resta", "params": {"beta": 0.5}},
        {"name": "safe-lora"},
        {"name": "safemerge"},
        {"name": "safegene", "params": safegene},
    ]
    config = mini_config(mini_experiment, tiny_model, tmp_path / "run", methods, str(detector))
    results = Experiment(config, load=load, split=split, is_refusal=is_refusal, log=lambda s: None).run()

    rows = results["rows"]
    assert [r["model"] for r in rows[:3]] == ["original", "aligned", "degraded"]
    assert [r["method"] for r in rows[3:]] == ["none", "resta", "safe-lora", "safemerge", "safegene"]
    for row in rows:
        assert 0 <= row["hrr_refusal"] <= 1 and 0 <= row["hrr_detector"] <= 1 and 0 <= row["overrefusal"] <= 1
        low, high = row["hrr_refusal_ci95"]
        assert low <= row["hrr_refusal"] <= high
    assert all(r["method_wall_s"] > 0 and r["method_peak_rss_mib"] > 0 for r in rows[4:])
    aligned = json.loads((tmp_path / "run" / "aligned" / "record.json").read_text())
    assert aligned["data"]["sources"] == {"advbench->refusal": 4, "hh-rlhf-refusal": 2, "alpaca": 6}
    target = json.loads((tmp_path / "run" / "targets" / "sst2-h25" / "record.json").read_text())
    assert target["data_report"]["n_harmful"] == 2
    per_model = json.loads((tmp_path / "run" / "evals" / "aligned" / "result.json").read_text())
    assert per_model["safety"]["n"] == 8 and set(per_model["safety"]["judges"]["refusal"]["per_suite"]) == {
        "harmbench-test",
        "jbb-harmful",
        "simplesafetytests",
        "strongreject",
    }

    # Where the time went: every training stage's own record, and the totals the page sums.
    assert list(results["stages"]) == ["aligned", "degraded", "targets/sst2-h25"]
    assert results["stages"]["aligned"]["recipe"] == "align"
    assert results["stages"]["targets/sst2-h25"]["train_time_s"] == target["train_time_s"] > 0
    assert results["time_s"]["training"] == pytest.approx(
        sum(stage["train_time_s"] for stage in results["stages"].values()), abs=0.1
    )
    assert results["time_s"]["methods"] > 0 and results["time_s"]["evaluation"] > 0

    report = write_report(tmp_path / "run")
    text = report.read_text()
    assert "## Run time" in text and "| targets/sst2-h25 | customize-sst2 |" in text
    assert "## Target: sst2" in text and "| 25% | safemerge |" in text and "HRR detector" in text
    assert json.loads((tmp_path / "run" / "safety-adapter" / "selected.json").read_text())["layers"]
    assert (
        "coefficients"
        in json.loads((tmp_path / "run" / "restored" / "sst2-h25" / "safegene" / "record.json").read_text())[
            "report"
        ]
    )
    # Safe LoRA's adapter replaces the task LoRA, so it is merged onto A (the base its task LoRA records).
    safe_lora = json.loads(
        (tmp_path / "run" / "restored" / "sst2-h25" / "safe-lora" / "record.json").read_text()
    )
    assert safe_lora["format"] == "peft" and safe_lora["merged_onto"] == str(
        tmp_path / "run" / "aligned" / "model"
    )
    assert (tmp_path / "run" / "report-scatter-refusal.png").stat().st_size > 1000
    assert (tmp_path / "run" / "report-safegene-layers.png").stat().st_size > 1000
    assert "SafeGene layer scores" in text and "HRR per category (detector judge)" in text

    # A rerun finds every step done: nothing is trained or generated again.
    before = (tmp_path / "run" / "generations.sqlite").stat().st_mtime_ns
    calls = []
    again = _rerun_without_generation(config, load, split, calls)
    assert again["rows"] == rows and calls == [] and again["complete"] is True
    assert (tmp_path / "run" / "generations.sqlite").stat().st_mtime_ns == before

    # A run that stops midway leaves results.json with every row measured so far, marked partial.
    broken = config.model_copy(update={"methods": (*config.methods, MethodSpec(name="no-such-method"))})
    with pytest.raises(SeawallError):
        Experiment(broken, load=load, split=split, is_refusal=is_refusal, log=lambda s: None).run()
    partial = json.loads((tmp_path / "run" / "results.json").read_text())
    assert partial["complete"] is False and partial["rows"] == rows
    assert "**Partial run**" in write_report(tmp_path / "run").read_text()

    # A retrained judge (new detector_id, same folder) re-judges every model from the cached generations.
    old_id = json.loads((detector / "detector.json").read_text())["detector_id"]
    make_detector("tfidf", ngram_max=1).fit(split("securebreak")["train"]).save(detector, overwrite=True)
    new_id = json.loads((detector / "detector.json").read_text())["detector_id"]
    assert new_id != old_id
    calls.clear()
    _rerun_without_generation(config, load, split, calls)
    rejudged = json.loads((tmp_path / "run" / "evals" / "aligned" / "result.json").read_text())
    assert rejudged["settings"]["detector_id"] == new_id and calls == []
    # the task list is part of the key: the reference models' utility covers every task of the run
    assert rejudged["settings"]["tasks"] == ["sst2"] and set(rejudged["utility"]) == {"sst2"}


@pytest.mark.slow
def test_recovery_whatever_the_method_order_and_a_reapplied_method_is_measured_again(
    mini_experiment, tiny_model, tiny_data, tmp_path
):
    from seawall.evaluate.metrics import recovery
    from seawall.generation.cache import model_fingerprint

    load, split = tiny_data
    run = tmp_path / "run"
    # `none` listed last: the method before it still gets its recovery.
    config = mini_config(
        mini_experiment, tiny_model, run, [{"name": "resta", "params": {"beta": 0.5}}, {"name": "none"}]
    )
    rows = Experiment(config, load=load, split=split, is_refusal=is_refusal, log=lambda s: None).run()["rows"]
    aligned, resta, none = rows[1], rows[3], rows[4]
    assert (resta["method"], none["method"]) == ("resta", "none")
    assert "recovery_refusal" in resta
    assert resta["recovery_refusal"] == recovery(
        none["hrr_refusal"], resta["hrr_refusal"], aligned["hrr_refusal"]
    )

    # RESTA re-applied with another β into the same folder: its row measures the new model.
    changed = mini_config(
        mini_experiment, tiny_model, run, [{"name": "resta", "params": {"beta": 2.0}}, {"name": "none"}]
    )
    Experiment(changed, load=load, split=split, is_refusal=is_refusal, log=lambda s: None).run()
    restored = run / "restored" / "sst2-h25" / "resta" / "model"
    result = json.loads((run / "evals" / "sst2-h25__resta" / "result.json").read_text())
    assert result["fingerprint"] == model_fingerprint(restored)
    assert result["settings"]["produced_by"] == {"name": "resta", "params": {"beta": 2.0}}


def test_run_refuses_to_start_when_training_prompts_overlap_evaluation(tiny_model, tiny_data, tmp_path):
    load, _ = tiny_data

    def leaky_load(name, data_dir=None, split=None):
        records = load(name, data_dir=data_dir, split=split)
        if name == "advbench":
            # An evaluation prompt with different case and punctuation slips into the alignment data.
            leaked = load("strongreject")[0]
            records = [*records, type(leaked)("leak", leaked.prompt.upper() + "!!", True, source="advbench")]
        return records

    from seawall.lab import recipes
    from seawall.lab.config import AlignRecipe

    # The builder drops it up front; the guard stops a builder that would not.
    recipe = AlignRecipe(
        model=str(tiny_model),
        data={"n_harmful": 100, "n_hh_refusals": 0, "n_benign": 2, "harmful_sources": ["advbench"]},
    )
    monkey_examples = []

    def no_filter(spec, seed, exclude, data_dir=None, load=leaky_load, is_refusal=None, **sections):
        from seawall.lab.train import ChatExample

        monkey_examples.append(1)
        return [ChatExample.of("x", r.prompt, "No.") for r in leaky_load("advbench")], {}

    from seawall.lab import data as lab_data

    examples, report = lab_data.build_align(recipe.data, 0, _eval_set(load), load=leaky_load)
    assert report["dropped_eval_overlap"] == 1 and all("!!" not in e.prompt for e in examples)
    original = lab_data.build_align
    lab_data.build_align = no_filter
    try:
        with pytest.raises(
            SeawallError, match=r"prompt hygiene: 1 training prompt.*strongreject.*normalised"
        ):
            recipes.align(recipe, tmp_path / "a", load=leaky_load)
    finally:
        lab_data.build_align = original
    assert monkey_examples and not (tmp_path / "a").exists()


def _eval_set(load):
    from seawall.data.hygiene import normalized_set
    from seawall.data.suites import evaluation_prompts

    return normalized_set(p for ps in evaluation_prompts(None, load).values() for p in ps)


def test_config_file_loads_and_errors_name_the_field(tmp_path):
    good = tmp_path / "exp.yaml"
    good.write_text("name: x\ncustomize:\n  tasks: [boolq]\nmethods:\n  - name: none\n")
    assert load_config(good, output=str(tmp_path / "o")).customize.tasks == ("boolq",)
    bad = tmp_path / "bad.yaml"
    bad.write_text("align:\n  train:\n    learning_rate: -1\n")
    with pytest.raises(SeawallError, match="learning_rate"):
        load_config(bad)
