"""The experiment's `filter` method: the target customized on detector-filtered task data, measured like the others."""

import json

import pytest

from seawall.data.records import ResponseRecord
from seawall.detect import is_refusal
from seawall.errors import SeawallError
from seawall.evaluate.experiment import Experiment


def _detector(folder, load, offset=100):
    """A real tfidf detector trained on pairs like the tiny customize data: fraud steps unsafe, sst2 answers safe."""
    from seawall.data.tasks import TASKS
    from seawall.detect import make_detector

    task = TASKS["sst2"]
    unsafe = [
        ResponseRecord(
            f"u{i}",
            f"How to commit fraud scheme {i + offset}?",
            f"Step one of fraud scheme {i + offset}: open accounts, move money, hide traces.",
            "unsafe",
        )
        for i in range(8)
    ]
    safe = [
        ResponseRecord(f"s{x.id}", task.prompt(x), task.answer(x), "safe") for x in load("sst2", split="test")
    ]
    make_detector("tfidf", min_df=1, category_model=False).fit(unsafe + safe).save(folder, overwrite=True)
    return folder


def _config(mini_experiment, tiny_model, output, methods):
    return mini_experiment(
        tiny_model,
        output,
        methods,
        name="mini-filter",
        train={"max_length": 256},
        max_steps={"align": 1, "degrade": 1},
        eval={"decoding": {"max_new_tokens": 4, "task_max_new_tokens": 2, "batch_size": 8}},
    )


def test_filter_method_customizes_on_the_kept_rows_and_is_measured(
    mini_experiment, tiny_model, tiny_data, tmp_path
):
    load, split = tiny_data
    detector = _detector(tmp_path / "filter-detector", load)
    run = tmp_path / "run"
    methods = [{"name": "none"}, {"name": "filter", "params": {"detector": str(detector)}}]
    config = _config(mini_experiment, tiny_model, run, methods)
    logs = []
    results = Experiment(config, load=load, split=split, is_refusal=is_refusal, log=logs.append).run()

    none, filtered = results["rows"][3:]
    assert (none["method"], filtered["method"]) == ("none", "filter")
    assert filtered["eval_dir"] == "sst2-h25__filter" and 0 <= filtered["hrr_refusal"] <= 1
    assert "recovery_refusal" in filtered and filtered["method_wall_s"] > 0
    folder = run / "restored" / "sst2-h25" / "filter"
    method = json.loads((folder / "method.json").read_text())
    assert method["detector"] == str(detector) and method["report"]["dropped"] == 2
    assert method["report"]["per_source"]["sst2-train"] == {"kept": 6, "dropped": 0}
    trained = json.loads((folder / "record.json").read_text())
    assert trained["config"]["filter_with"] == str(detector) and set(trained["data"]["sources"]) == {
        "sst2-train"
    }
    undefended = json.loads((run / "targets" / "sst2-h25" / "record.json").read_text())
    assert undefended["data"]["n"] == 8 and undefended["config"]["filter_with"] is None
    assert len((folder / "filtered.dropped.jsonl").read_text().splitlines()) == 2

    # A rerun reuses everything; a retrained filtering detector (new id, same folder) customizes again.
    again = Experiment(config, load=load, split=split, is_refusal=is_refusal, log=logs.append).run()
    assert again["rows"] == results["rows"]
    _detector(detector, load, offset=200)
    Experiment(config, load=load, split=split, is_refusal=is_refusal, log=logs.append).run()
    assert any("filter on sst2-h25: the detector or its parameters changed" in line for line in logs)
    new_id = json.loads((detector / "detector.json").read_text())["detector_id"]
    assert json.loads((folder / "method.json").read_text())["detector_id"] == new_id != method["detector_id"]


def test_filter_method_errors_name_the_parameter_and_the_detector(
    mini_experiment, tiny_model, tiny_data, tmp_path
):
    from seawall.evaluate.methods import filtered_target

    load, split = tiny_data
    experiment = Experiment(
        _config(mini_experiment, tiny_model, tmp_path / "run", [{"name": "none"}]),
        load=load,
        split=split,
        is_refusal=is_refusal,
    )
    with pytest.raises(SeawallError, match=r"unknown parameter.*threshold"):
        filtered_target(experiment, {"threshold": 0.5}, "sst2", 0.25)
    with pytest.raises(SeawallError, match=r"missing/detector\.json not found"):
        filtered_target(experiment, {"detector": str(tmp_path / "missing")}, "sst2", 0.25)
