"""Every loader against the real shared files, with exact counts."""

from __future__ import annotations

from collections import Counter

import pytest

from seawall.data import (
    DATASETS,
    PromptRecord,
    ResponseRecord,
    TaskExample,
    deduplicate,
    duplicate_count,
    load,
)
from seawall.data.taxonomy import HAZARDS


def test_securebreak_counts(shared_data):
    dataset = load("securebreak", data_dir=shared_data)
    records = dataset.records
    assert len(records) == 3059
    assert Counter(r.label for r in records) == {"unsafe": 1208, "safe": 1851}
    assert len({r.prompt for r in records}) == 100
    categories = Counter(r.category for r in records)
    assert len(categories) == 10
    behaviours = {(r.category, r.metadata["behavior"]) for r in records}
    assert Counter(c for c, _ in behaviours) == dict.fromkeys(categories, 10)
    empty = [r for r in records if not r.response.strip()]
    assert len(empty) == 309 and all(r.label == "safe" for r in empty)
    assert duplicate_count(records) == 670
    assert Counter(r.metadata["source_llm"] for r in records) == {"xbreaking": 2524, "base": 535}
    assert Counter(r.metadata["question_source"] for r in {r.prompt: r for r in records}.values()) == {
        "JBB-BD": 55,
        "TDC/HarmBench": 27,
        "AdvBench": 18,
    }
    assert len({r.id for r in records}) == 3059


def test_securebreak_invalid_bytes_are_repaired_and_counted(shared_data):
    dataset = load("securebreak", data_dir=shared_data)
    assert dataset.report.repaired_rows == 369
    assert dataset.report.skipped.total() == 0
    repaired = [r for r in dataset.records if "\ufffd" in r.response]
    assert repaired and all("\udcfd" not in r.response for r in repaired)


def test_securebreak_dedup_keeps_unsafe_on_conflict(shared_data):
    records = load("securebreak", data_dir=shared_data).records
    kept, report = deduplicate(records, rule="any-unsafe")
    assert report.removed == 670 and len(kept) == 3059 - 670
    assert report.conflicting_groups == 8  # 9 rows disagree with an earlier copy, in 8 groups
    conflicted = [r for r in kept if "duplicate_labels" in r.metadata]
    assert all(r.label == "unsafe" for r in conflicted if "unsafe" in r.metadata["duplicate_labels"])


@pytest.mark.parametrize(
    ("name", "split", "rows", "kind"),
    [
        ("gptfuzz", None, 6160, ResponseRecord),
        ("alpaca", None, 2000, ResponseRecord),
        ("hh-rlhf-harmless", None, 2312, ResponseRecord),
        ("harmbench", "all", 400, PromptRecord),
        ("harmbench", "val", 80, PromptRecord),
        ("harmbench", "test", 320, PromptRecord),
        ("advbench", None, 520, PromptRecord),
        ("strongreject", None, 313, PromptRecord),
        ("jbb-harmful", None, 100, PromptRecord),
        ("jbb-benign", None, 100, PromptRecord),
        ("simplesafetytests", None, 100, PromptRecord),
        ("donotanswer", None, 939, PromptRecord),
        ("ailuminate", None, 1200, PromptRecord),
        ("xstest", None, 450, PromptRecord),
        ("coconot-contrast", None, 379, PromptRecord),
        ("seawall-contrast", None, 552, PromptRecord),
        ("sst2", "train", 67349, TaskExample),
        ("sst2", "test", 872, TaskExample),
        ("ag_news", "train", 20000, TaskExample),
        ("ag_news", "test", 7600, TaskExample),
        ("gsm8k", "train", 7473, TaskExample),
        ("gsm8k", "test", 1319, TaskExample),
    ],
)
def test_loader_counts(shared_data, name, split, rows, kind):
    dataset = load(name, data_dir=shared_data, split=split)
    assert len(dataset) == rows
    assert all(isinstance(r, kind) for r in dataset.records)
    assert len({r.id for r in dataset.records}) == rows, "ids must be unique"
    assert all((r.input if kind is TaskExample else r.prompt).strip() for r in dataset.records)


def test_every_registered_dataset_is_covered():
    import seawall.data.sources  # noqa: F401

    assert set(DATASETS.names()) == {
        "securebreak",
        "gptfuzz",
        "alpaca",
        "hh-rlhf-harmless",
        "harmbench",
        "advbench",
        "strongreject",
        "jbb-harmful",
        "jbb-benign",
        "simplesafetytests",
        "donotanswer",
        "ailuminate",
        "xstest",
        "coconot-contrast",
        "cyberseceval-frr",
        "diasafety",
        "toxichat",
        "safetext",
        "openai-moderation",
        "safety-tuned-llamas",
        "stl-eval-harmful",
        "stl-eval-benign",
        "seawall-contrast",
        "sst2",
        "ag_news",
        "boolq",
        "gsm8k",
    }


def test_label_balances(shared_data):
    assert Counter(r.label for r in load("gptfuzz", data_dir=shared_data).records)["unsafe"] == 1694
    xstest = load("xstest", data_dir=shared_data).records
    assert sum(not r.harmful for r in xstest) == 250 and sum(r.harmful for r in xstest) == 200
    boolq = (
        load("boolq", data_dir=shared_data, split="train").records
        + load("boolq", data_dir=shared_data, split="test").records
    )
    assert len(boolq) == 3270 and Counter(r.target for r in boolq) == {"yes": 2033, "no": 1237}
    train_titles = {r.metadata["title"] for r in load("boolq", data_dir=shared_data, split="train").records}
    test_titles = {r.metadata["title"] for r in load("boolq", data_dir=shared_data, split="test").records}
    assert not train_titles & test_titles
    assert Counter(
        r.target for r in load("ag_news", data_dir=shared_data, split="train").records
    ) == dict.fromkeys(["World", "Sports", "Business", "Sci/Tech"], 5000)
    assert load("gsm8k", data_dir=shared_data, split="test").records[0].target == "18"


@pytest.mark.parametrize(
    "name",
    [
        "securebreak",
        "jbb-harmful",
        "harmbench",
        "strongreject",
        "simplesafetytests",
        "donotanswer",
        "ailuminate",
    ],
)
def test_every_category_maps_to_a_known_hazard(shared_data, name):
    split = "all" if name == "harmbench" else None
    for record in load(name, data_dir=shared_data, split=split).records:
        assert record.metadata["hazard"] in HAZARDS
        assert record.metadata["hazard"] != "other" or name in ("harmbench", "donotanswer")
