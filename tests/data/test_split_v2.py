"""Grouped canonical splits of the v2 response sets: no context, thread, post, scenario, instruction or text in two
splits, manifests that rebuild them, and ToxiChat's shipped splits checked rather than trusted."""

from __future__ import annotations

import json

import pytest

from seawall.data import ResponseRecord, apply_manifest, load, normalize_text, split_records
from seawall.data.split import canonical, group_key, shipped_split
from seawall.errors import DataError

V2_SETS = ("diasafety", "toxichat", "safetext", "safety-tuned-llamas", "openai-moderation")


def _disjoint(subsets, key) -> bool:
    keys = {name: {key(r) for r in records} - {""} for name, records in subsets.items()}
    return not (keys["train"] & keys["dev"] or keys["train"] & keys["test"] or keys["dev"] & keys["test"])


@pytest.mark.parametrize("name", V2_SETS)
def test_canonical_split_is_grouped_and_reproducible(shared_data, name):
    split = canonical(name, data_dir=shared_data)
    records = load(name, data_dir=shared_data).records
    assert set(split.subsets) == {"train", "dev", "test"}
    assert sorted(r.id for rs in split.subsets.values() for r in rs) == sorted(r.id for r in records)
    assert _disjoint(split.subsets, group_key)
    assert _disjoint(
        split.subsets, lambda r: normalize_text(r.prompt)
    )  # prompts (contexts, threads, scenarios…)
    assert _disjoint(split.subsets, lambda r: normalize_text(r.response) if not r.prompt else "")
    assert apply_manifest(records, json.loads(json.dumps(split.manifest))) == split.subsets
    shares = {s: len(rs) / len(records) for s, rs in split.subsets.items()}
    assert 0.66 < shares["train"] < 0.74 and 0.12 < shares["dev"] < 0.18 and 0.12 < shares["test"] < 0.18


def test_diasafety_is_resplit_because_its_shipped_splits_share_contexts(shared_data):
    records = load("diasafety", data_dir=shared_data).records
    shipped: dict[str, set[str]] = {}
    for r in records:
        shipped.setdefault(normalize_text(r.prompt), set()).add(r.metadata["shipped_split"])
    assert sum(len(parts) > 1 for parts in shipped.values()) > 800
    with pytest.raises(DataError, match="the shipped splits overlap"):
        shipped_split(records, {"train": "train", "val": "dev", "test": "test"}, dataset="diasafety")
    split = canonical("diasafety", data_dir=shared_data)
    assert split.manifest["seed"] == 0 and split.manifest["stratify_by"] == "category"
    assert {name: c["groups"] for name, c in split.manifest["counts"].items()} == {
        "train": 5364,
        "dev": 1149,
        "test": 1149,
    }


def test_toxichat_uses_its_shipped_splits_grouped_by_post(shared_data):
    split = canonical("toxichat", data_dir=shared_data)
    assert {name: c["records"] for name, c in split.manifest["counts"].items()} == {
        "train": 2796,
        "dev": 596,
        "test": 598,
    }
    for name, records in split.subsets.items():
        assert {r.metadata["shipped_split"] for r in records} == {name}
    assert _disjoint(split.subsets, lambda r: normalize_text(r.metadata["thread"][0]["text"]))  # posts
    assert _disjoint(split.subsets, lambda r: r.prompt)  # whole threads
    assert split.manifest["shipped"] == {"train": "train", "dev": "dev", "test": "test"}


def _reply(ident: str, post: str, shipped: str) -> ResponseRecord:
    return ResponseRecord(
        id=ident,
        prompt=f"{post}\n\nsome reply under it {ident}",
        response="ok",
        label="safe",
        metadata={"group": post, "shipped_split": shipped},
    )


def test_shipped_split_rejects_a_post_in_two_splits():
    records = [_reply("a", "Title: cats", "train"), _reply("b", "Title: Cats!", "test")]
    with pytest.raises(DataError, match=r"record b \(test\) shares its group with the train split"):
        shipped_split(records, {"train": "train", "test": "test"}, dataset="toy")
    with pytest.raises(DataError, match="shipped split 'val'"):
        shipped_split([_reply("c", "x", "val")], {"train": "train"}, dataset="toy")


def test_texts_without_prompt_are_grouped_by_their_text():
    texts = [f"moderation text number {i}" for i in range(40)]
    records = [
        ResponseRecord(id=f"m{i}-{copy}", prompt="", response=text.upper() if copy else text, label="safe")
        for i, text in enumerate(texts)
        for copy in range(2)
    ]
    split = split_records(records, seed=3)
    assert all(len(rs) > 10 for rs in split.subsets.values())  # not one group holding every empty prompt
    assert _disjoint(split.subsets, lambda r: normalize_text(r.response))


def test_a_named_group_keeps_different_prompts_together():
    records = [_reply(f"r{i}", f"post {i // 4}", "train") for i in range(80)]
    split = split_records(records, seed=1)
    assert _disjoint(split.subsets, lambda r: r.metadata["group"])
    assert len({group_key(r) for r in records}) == 20
