"""Grouped, stratified, seeded splits: properties (hypothesis) and the canonical SecureBreak split."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from seawall.data import ResponseRecord, apply_manifest, canonical_split, load, normalize_text, split_records
from seawall.data.split import CANONICAL_FRACTIONS


def make_records(spec: list[tuple[int, int, int]]) -> list[ResponseRecord]:
    """spec = (prompt index, category index, rows); prompts differ only in case/punctuation for odd indices."""
    records = []
    for prompt_index, category, rows in spec:
        for row in range(rows):
            text = f"Prompt number {prompt_index}"
            if row % 2:
                text = text.upper() + "!!"
            records.append(
                ResponseRecord(
                    id=f"r{len(records)}",
                    prompt=text,
                    response=f"resp {row}",
                    label="safe",
                    category=f"c{category}",
                )
            )
    return records


specs = st.lists(
    st.tuples(st.integers(0, 200), st.integers(0, 4), st.integers(1, 6)),
    min_size=20,
    max_size=120,
    unique_by=lambda t: t[0],
)


@settings(max_examples=60, deadline=None)
@given(spec=specs, seed=st.integers(0, 10_000))
def test_no_group_crosses_splits_and_seed_is_reproducible(spec, seed):
    records = make_records(spec)
    split = split_records(records, seed=seed)
    groups = {name: {normalize_text(r.prompt) for r in rs} for name, rs in split.subsets.items()}
    assert (
        not groups["train"] & groups["dev"]
        and not groups["train"] & groups["test"]
        and not groups["dev"] & groups["test"]
    )
    assert sum(len(rs) for rs in split.subsets.values()) == len(records)
    assert split_records(records, seed=seed).manifest == split.manifest
    total = len({normalize_text(r.prompt) for r in records})
    for name, fraction in CANONICAL_FRACTIONS.items():
        assert abs(len(groups[name]) - fraction * total) <= 1


@settings(max_examples=30, deadline=None)
@given(spec=specs, seed=st.integers(0, 10_000))
def test_manifest_round_trip(spec, seed):
    records = make_records(spec)
    split = split_records(records, seed=seed)
    assert apply_manifest(records, split.manifest) == split.subsets


def test_canonical_securebreak_split(shared_data):
    subsets = canonical_split("securebreak", data_dir=shared_data)
    questions = {name: {r.prompt for r in rs} for name, rs in subsets.items()}
    assert {name: len(q) for name, q in questions.items()} == {"train": 70, "dev": 15, "test": 15}
    assert sum(len(rs) for rs in subsets.values()) == 3059
    per_category = {
        name: Counter(r.category for r in {r.prompt: r for r in rs}.values()) for name, rs in subsets.items()
    }
    assert all(count == 7 for count in per_category["train"].values()) and len(per_category["train"]) == 10
    assert all(1 <= count <= 2 for count in per_category["test"].values())
    again = canonical_split("securebreak", data_dir=shared_data)
    assert [r.id for r in again["test"]] == [r.id for r in subsets["test"]]
    assert load("securebreak", data_dir=shared_data).records[0].id == "sb-00001"
