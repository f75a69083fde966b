"""`seawall lab customize --filter-with DIR`: the detector drops the harmful rows of the task data before training."""

import json

import pytest
from typer.testing import CliRunner

from seawall.data.records import ResponseRecord
from seawall.errors import SeawallError
from seawall.lab import recipes
from seawall.lab.config import CustomizeData, CustomizeRecipe, DegradeData, TrainConfig
from seawall.lab.filtering import filter_examples
from seawall.lab.train import ChatExample


@pytest.fixture(scope="module")
def detector(tmp_path_factory, tiny_data):
    """A real tfidf detector, trained on pairs like (not equal to) the tiny customize data: fraud steps are unsafe,
    sst2 answers safe."""
    from seawall.data.tasks import TASKS
    from seawall.detect import make_detector

    load, _ = tiny_data
    unsafe = [
        ResponseRecord(
            f"u{i}",
            f"How to commit fraud scheme {i + 100}?",
            f"Step one of fraud scheme {i + 100}: open accounts, move money, hide traces.",
            "unsafe",
            category="fraud",
        )
        for i in range(8)
    ]
    task = TASKS["sst2"]
    safe = [
        ResponseRecord(f"s{x.id}", task.prompt(x), task.answer(x), "safe", category="fraud")
        for x in load("sst2", split="test")
    ]
    folder = tmp_path_factory.mktemp("detector") / "tfidf"
    make_detector("tfidf", min_df=1, category_model=False).fit(unsafe + safe).save(folder)
    return folder


def _recipe(tiny_model, detector, **data):
    return CustomizeRecipe(
        model=str(tiny_model),
        data=CustomizeData(
            task="sst2", n_train=8, harmful_share=0.25, degrade=DegradeData(min_response_words=3), **data
        ),
        train=TrainConfig(max_steps=1, batch_size=4, grad_accum=1, max_length=256, lora_r=4),
        filter_with=str(detector),
    )


@pytest.mark.slow
def test_customize_filter_with_drops_the_harmful_rows_and_writes_them(
    tiny_model, tiny_data, detector, tmp_path
):
    load, split = tiny_data
    out = tmp_path / "target"
    record = recipes.customize(_recipe(tiny_model, detector), out, load=load, split=split)

    report = record["data_report"]["filter"]
    assert report["rows"] == 8 and (report["kept"], report["dropped"]) == (6, 2)
    harmful = {k: v for k, v in report["per_source"].items() if k != "sst2-train"}
    assert report["per_source"]["sst2-train"] == {"kept": 6, "dropped": 0}
    assert all(k.endswith("-train-unsafe") and v["kept"] == 0 for k, v in harmful.items())
    assert sum(v["dropped"] for v in harmful.values()) == 2
    assert report["per_category"] == {"unknown": {"kept": 6, "dropped": 2}}
    assert report["detector_id"] == json.loads((detector / "detector.json").read_text())["detector_id"]
    # Only what the detector kept was trained on.
    assert record["data"]["n"] == 6 and set(record["data"]["sources"]) == {"sst2-train"}
    dropped = [json.loads(line) for line in (out / "filtered.dropped.jsonl").read_text().splitlines()]
    assert len(dropped) == 2 and all(
        row["id"].startswith("unsafe:") and "fraud" in row["response"] for row in dropped
    )
    assert all(row["seawall_p_unsafe"] >= report["threshold"] for row in dropped)
    kept = [json.loads(line)["id"] for line in (out / "filtered.jsonl").read_text().splitlines()]
    assert sorted(kept) == sorted(record["data"]["ids"])
    assert len((out / "task-data.jsonl").read_text().splitlines()) == 8
    assert json.loads((out / "filtered.report.json").read_text())["dropped"] == 2

    # The filter is part of the recipe: the finished run is reused, another filter in the same folder is refused.
    assert recipes.customize(_recipe(tiny_model, detector), out, load=load, split=split) == record
    other = _recipe(tiny_model, detector).model_copy(update={"filter_with": str(detector) + "-other"})
    with pytest.raises(SeawallError, match="another recipe"):
        recipes.customize(other, out, load=load, split=split)


def test_filter_errors_name_the_detector_and_the_rows(detector, tmp_path):
    examples = [
        ChatExample.of("a", "How to commit fraud scheme 1?", "Step one of fraud scheme 1: move money.")
    ]
    with pytest.raises(SeawallError, match=r"no detector\.json"):
        filter_examples(examples, tmp_path / "missing", tmp_path / "out")
    with pytest.raises(SeawallError, match="judged all 1 training examples unsafe"):
        filter_examples(examples, detector, tmp_path / "out")
    with pytest.raises(SeawallError, match="id 'a' occurs twice"):
        filter_examples(examples * 2, detector, tmp_path / "out")


def test_cli_passes_filter_with_into_the_recipe(monkeypatch, tmp_path):
    from seawall.cli import app

    seen = []

    def fake_customize(recipe, output):
        seen.append(recipe)
        return {"recipe": "x", "steps": 0, "train_time_s": 0, "data": {"sources": {}}, "losses": []}

    monkeypatch.setattr(recipes, "customize", fake_customize)
    result = CliRunner().invoke(
        app, ["lab", "customize", "--output", str(tmp_path / "o"), "--filter-with", "det", "--n-train", "5"]
    )
    assert result.exit_code == 0, result.output
    assert seen[0].filter_with == "det" and seen[0].data.n_train == 5
