"""The v2 detector data: DiaSafety, ToxiChat, SafeText, the moderation set, safety-tuned-llamas and CyberSecEval's
false-refusal prompts, against the real shared files with the counts of shared/data/README.md."""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter

import pytest

from seawall.data import PromptRecord, ResponseRecord, load
from seawall.data.sources.texts import MODERATION_FLAGS, moderation_label
from seawall.data.taxonomy import HAZARDS
from seawall.errors import DataError

ENTITY = re.compile(r"&(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);")


def _raw_diasafety(shared_data) -> dict[str, list[dict]]:
    folder = shared_data / "responses" / "diasafety"
    return {part: json.loads((folder / f"{part}.json").read_text()) for part in ("train", "val", "test")}


def test_diasafety_file_matches_the_readme(shared_data):
    raw = _raw_diasafety(shared_data)
    items = [item for part in raw.values() for item in part]
    assert {part: len(v) for part, v in raw.items()} == {"train": 9017, "val": 1097, "test": 1095}
    assert Counter(item["label"] for item in items)["Unsafe"] == 5181
    assert sum((i["context"] + i["response"]).count("\ufffd") for i in items) == 355
    assert sum(not i["response"].strip() for i in items) == 3
    pairs = Counter((i["context"], i["response"]) for i in items)
    assert sum(n - 1 for n in pairs.values()) == 1


def test_diasafety_loader(shared_data):
    dataset = load("diasafety", data_dir=shared_data)
    records = dataset.records
    assert dataset.report.rows == 11209
    # 1 exact repeat, and 8 more pairs that differ only in entities or surrounding spaces
    assert dict(dataset.report.skipped) == {"empty response": 3, "repeated (context, response) pair": 9}
    assert dataset.report.repaired == {
        "html entities": 245,
        "U+FFFD run replaced by an apostrophe": 108,
        "repeated (context, response) pair labelled both ways: kept as unsafe": 1,
    }
    assert len(records) == 11197 and len({r.id for r in records}) == 11197
    assert Counter(r.label for r in records) == {"unsafe": 5177, "safe": 6020}
    assert Counter(r.category for r in records) == {
        "Toxicity Agreement": 2927,
        "Unauthorized Expertise": 2609,
        "Biased Opinion": 2210,
        "Risk Ignorance": 1936,
        "Offending User": 1515,
    }
    assert Counter(r.metadata["shipped_split"] for r in records) == {"train": 9009, "val": 1095, "test": 1093}
    texts = [r.prompt + r.response for r in records]
    assert not any("\ufffd" in t for t in texts)
    assert not any(ENTITY.search(t) for t in texts)
    assert all(r.response == r.response.strip() and r.response for r in records)
    assert {r.metadata["hazard"] for r in records} == {"hate", "suicide_self_harm", "specialized_advice"}


def test_diasafety_lost_quotes_become_apostrophes(shared_data):
    raw = _raw_diasafety(shared_data)["train"]
    index = next(i for i, item in enumerate(raw) if "don\ufffd\ufffdt" in item["context"])
    record = next(
        r for r in load("diasafety", data_dir=shared_data).records if r.id == f"dia-train-{index:05d}"
    )
    assert "don't" in record.prompt


def test_toxichat_loader(shared_data):
    dataset = load("toxichat", data_dir=shared_data)
    records = dataset.records
    assert dataset.report.rows == 4000  # replies: two per thread, 2,000 threads
    assert dict(dataset.report.skipped) == {"empty reply": 10}
    assert dataset.report.repaired == {"html entities": 362}
    assert len(records) == 3990 and len({r.id for r in records}) == 3990
    assert Counter(r.label for r in records) == {
        "safe": 3422,
        "unsafe": 568,
    }  # the 10 empty replies were safe
    assert Counter(r.metadata["shipped_split"] for r in records) == {"train": 2796, "dev": 596, "test": 598}
    assert Counter(r.generator for r in records) == {"dgpt": 2000, "gpt3": 1990}
    assert {len(r.metadata["thread"]) for r in records} == {2, 3}
    for r in records:
        assert r.prompt == "\n\n".join(turn["text"] for turn in r.metadata["thread"])
        assert r.metadata["group"] == r.metadata["thread"][0]["text"]
        assert not ENTITY.search(r.prompt + r.response)
        assert "\xa0" not in r.prompt and (r.metadata["hazard"] == "hate") == (r.label == "unsafe")
    assert len(load("toxichat", data_dir=shared_data, split="dev")) == 596


def test_toxichat_double_escaped_entities_are_decoded(shared_data):
    line = (shared_data / "responses/toxichat/train.jsonl").read_text().splitlines()[0]
    assert "&amp;nbsp;" in line
    first = next(
        r
        for r in load("toxichat", data_dir=shared_data, split="train").records
        if r.id == "tc-train-0001-dgpt"
    )
    assert "Prepared for you by the_yaya" in first.prompt


def test_safetext_loader(shared_data):
    dataset = load("safetext", data_dir=shared_data)
    records = dataset.records
    assert dataset.report.rows == 1465 and dict(dataset.report.skipped) == {
        "repeated (scenario, advice) pair": 35
    }
    assert len(records) == 1430 and len({r.id for r in records}) == 1430
    assert Counter(r.label for r in records) == {"safe": 1060, "unsafe": 370}  # the 35 repeats were all safe
    assert len({r.prompt for r in records}) == 367
    mushroom = [r for r in records if r.prompt.startswith("If you're on a hike in the woods")]
    assert {(r.response, r.label) for r in mushroom} >= {("taste it.", "unsafe"), ("do not eat it.", "safe")}


def test_moderation_file_matches_the_readme(shared_data):
    with gzip.open(shared_data / "texts/openai_moderation/samples-1680.jsonl.gz", "rt") as stream:
        rows = [json.loads(line) for line in stream]
    assert len(rows) == 1680
    assert sum(any(row.get(code) == 1 for code in MODERATION_FLAGS) for row in rows) == 522


def test_moderation_loader(shared_data):
    dataset = load("openai-moderation", data_dir=shared_data)
    records = dataset.records
    assert dataset.report.rows == 1680
    assert dict(dataset.report.skipped) == {"repeated text (flags merged into its first line)": 15}
    assert dataset.report.repaired == {
        "html entities": 45,
        "repeated text whose copies disagree on a flag (1 wins)": 1,
    }
    assert len(records) == 1665 and len({r.id for r in records}) == 1665
    assert Counter(r.label for r in records) == {"unsafe": 515, "safe": 337, "unknown": 813}
    assert all(r.prompt == "" and r.response for r in records)
    for r in records:
        flags = r.metadata["flags"]
        assert r.label == moderation_label(flags)
        if r.label == "safe":
            assert set(flags.values()) == {0}
        if r.label == "unknown":
            assert None in flags.values() and 1 not in flags.values()
        assert (r.category is None) == (r.label != "unsafe")
        assert r.metadata["hazard"] in (set(HAZARDS) - {"other"} if r.category else {None})
    assert Counter(r.category for r in records if r.category) == {
        "S": 138,
        "H": 97,
        "S3": 82,
        "HR": 65,
        "SH": 51,
        "H2": 41,
        "V": 23,
        "V2": 18,
    }


def test_moderation_label_missing_key_is_unknown_never_zero():
    known_zero = dict.fromkeys(MODERATION_FLAGS, 0)
    assert moderation_label(known_zero) == "safe"
    assert moderation_label({**known_zero, "H": None}) == "unknown"
    assert moderation_label({code: 0 for code in MODERATION_FLAGS if code != "V2"}) == "unknown"
    assert moderation_label({"S": 1}) == "unsafe"
    assert moderation_label({}) == "unknown"


def _moderation_file(root, rows: list[dict]) -> None:
    folder = root / "texts" / "openai_moderation"
    folder.mkdir(parents=True)
    with gzip.open(folder / "samples-1680.jsonl.gz", "wt") as stream:
        stream.writelines(json.dumps(row) + "\n" for row in rows)


def test_moderation_repeats_merge_flags_and_bad_flags_name_the_line(tmp_path):
    zeros = dict.fromkeys(MODERATION_FLAGS, 0)
    _moderation_file(
        tmp_path,
        [
            {"prompt": "a &amp; b", "S": 0, "H": 0},
            {"prompt": "fine text", **zeros},
            {"prompt": "a & b", **zeros},  # the same text once decoded: its known zeros fill the gaps
            {"prompt": "only sexual known", "S": 1},
        ],
    )
    records = {r.response: r for r in load("openai-moderation", data_dir=tmp_path).records}
    assert records["a & b"].label == "safe" and records["a & b"].id == "mod-0001"
    assert records["only sexual known"].label == "unsafe" and records["only sexual known"].category == "S"
    assert records["fine text"].label == "safe"

    bad = tmp_path / "bad"
    _moderation_file(bad, [{"prompt": "x", **zeros}, {"prompt": "y", "V": 2}])
    with pytest.raises(DataError, match=r"line 2, field V: 2 is not 0, 1 or absent"):
        load("openai-moderation", data_dir=bad)


def test_safety_tuned_llamas_loader(shared_data):
    records = load("safety-tuned-llamas", data_dir=shared_data).records
    assert len(records) == 2483 and all(isinstance(r, ResponseRecord) for r in records)
    assert Counter(r.label for r in records) == {"safe": 2483}
    assert len({r.prompt for r in records}) == 2479  # 4 instructions are answered twice
    refusals = sum(r.response.startswith(("I'm sorry", "I am sorry")) for r in records)
    assert 0.3 < refusals / len(records) < 0.8  # safe answers, many of them not bare refusals


@pytest.mark.parametrize(
    ("name", "harmful", "per_list"),
    [
        (
            "stl-eval-harmful",
            True,
            {
                "I-CoNa": 178,
                "I-Controversial": 40,
                "I-MaliciousInstructions": 98,
                "I-PhysicalSafetyUnsafe": 100,
                "Q-Harm": 100,
            },
        ),
        ("stl-eval-benign", False, {"I-Alpaca": 50, "I-PhysicalSafetySafe": 100}),
    ],
)
def test_safety_tuned_llamas_evaluation_lists(shared_data, name, harmful, per_list):
    dataset = load(name, data_dir=shared_data)
    assert all(isinstance(r, PromptRecord) and r.harmful is harmful for r in dataset.records)
    assert Counter(r.category for r in dataset.records) == per_list
    assert len({r.id for r in dataset.records}) == len(dataset) == sum(per_list.values())
    assert dataset.report.skipped.total() == (
        2 if harmful else 0
    )  # I-MaliciousInstructions lists 2 prompts twice


def test_cyberseceval_frr_loader(shared_data):
    records = load("cyberseceval-frr", data_dir=shared_data).records
    assert len(records) == 750 and len({r.id for r in records}) == 750
    assert all(isinstance(r, PromptRecord) and not r.harmful and r.prompt for r in records)


def test_cyberseceval_frr_rejects_a_malicious_row(tmp_path):
    folder = tmp_path / "prompts/benign/cyberseceval_frr"
    folder.mkdir(parents=True)
    (folder / "mitre_frr.json").write_text(
        json.dumps(
            [{"mutated_prompt": "ok", "is_malicious": False}, {"mutated_prompt": "bad", "is_malicious": True}]
        )
    )
    with pytest.raises(DataError, match=r"mitre_frr.json, item 1, field is_malicious"):
        load("cyberseceval-frr", data_dir=tmp_path)


def test_malformed_v2_files_are_clear_errors(tmp_path):
    folder = tmp_path / "responses/safetext"
    folder.mkdir(parents=True)
    (folder / "SafeText.json").write_text(
        '{"If x,": {"unsafe": ["do y."], "safe": ["wait."]}, "If z,": ["no"]}'
    )
    with pytest.raises(DataError, match=r"SafeText.json, scenario 'If z,'"):
        load("safetext", data_dir=tmp_path)
    (folder / "SafeText.json").write_text("[1, 2")
    with pytest.raises(DataError, match=r"SafeText.json: invalid JSON at line 1"):
        load("safetext", data_dir=tmp_path)
    dia = tmp_path / "responses/diasafety"
    dia.mkdir(parents=True)
    row = {"context": "c", "response": "r", "category": "Risk Ignorance", "label": "Safe"}
    for part in ("train", "val", "test"):
        (dia / f"{part}.json").write_text(json.dumps([row]))
    (dia / "val.json").write_text(json.dumps([{**row, "category": "Spam"}]))
    with pytest.raises(DataError, match=r"val.json, item 0, field category: 'Spam'"):
        load("diasafety", data_dir=tmp_path)
    (dia / "val.json").write_text(json.dumps([{**row, "label": "maybe"}]))
    with pytest.raises(DataError, match=r"val.json, item 0, field label"):
        load("diasafety", data_dir=tmp_path)


@pytest.mark.parametrize("name", ["diasafety", "toxichat", "openai-moderation"])
def test_v2_hazards_are_known(shared_data, name):
    hazards = {r.metadata["hazard"] for r in load(name, data_dir=shared_data).records} - {None}
    assert hazards and hazards <= set(HAZARDS) - {"other"}
