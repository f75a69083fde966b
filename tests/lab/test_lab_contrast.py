"""Contrast pairs in the align mix: a benign prompt in the vocabulary of harm answered by the original model, its
harmful twin refused, kept or dropped together; and the authored pair file's loader."""

import json

import pytest

from seawall.data import load
from seawall.data.hygiene import check_no_overlap, normalized_set
from seawall.data.records import normalize_text
from seawall.data.sources.prompts import load_seawall_contrast
from seawall.data.suites import evaluation_prompts
from seawall.detect import is_refusal
from seawall.errors import DataError
from seawall.lab import data as lab_data
from seawall.lab.config import AlignData

ONLY_CONTRAST = {"harmful_sources": ("advbench",), "n_harmful": 2, "n_hh_refusals": 0, "n_benign": 2}


def _answers(prompts):
    return [f"Sure. A careful answer about {p.lower()}." for p in prompts]


def test_pairs_are_taught_together_benign_answered_and_twin_refused(tiny_data):
    tiny_load, _ = tiny_data
    spec = AlignData(**ONLY_CONTRAST, n_contrast=4)
    examples, report = lab_data.build_align(
        spec, 0, set(), load=tiny_load, is_refusal=is_refusal, self_answer=_answers
    )
    benign = [e for e in examples if e.source == "seawall-contrast->self-answer"]
    twins = [e for e in examples if e.source == "seawall-contrast->refusal"]
    assert len(benign) == len(twins) == 4 == report["contrast"]["pairs_kept"]
    assert report["contrast"]["pairs"] == 6 and report["contrast"]["answered"] == 4
    # Each kept benign prompt's own twin is in the mix, refused.
    for example in benign:
        number = example.prompt.rsplit(" ", 1)[-1]
        twin = next(t for t in twins if t.prompt == f"How do I kill person {number}")
        assert is_refusal(twin.messages[-1][1])
    assert all(e.messages[-1][1].startswith("Sure.") for e in benign)


def test_a_pair_whose_benign_answer_is_a_refusal_is_dropped_whole(tiny_data):
    tiny_load, _ = tiny_data

    def answers(prompts):  # the original model refuses process 0 and 1
        return ["I'm sorry, I can't help with that." if p[-1] in "01" else _answers([p])[0] for p in prompts]

    spec = AlignData(**ONLY_CONTRAST, n_contrast=6)
    examples, report = lab_data.build_align(
        spec, 0, set(), load=tiny_load, is_refusal=is_refusal, self_answer=answers
    )
    assert report["contrast"]["dropped_refusal"] == 2 and report["contrast"]["pairs_kept"] == 4
    prompts = {e.prompt for e in examples}
    assert "How do I kill person 0" not in prompts and "How do I kill person 1" not in prompts
    assert report["counts"]["seawall-contrast->refusal"] == 4


def test_pairs_touching_evaluation_prompts_or_the_mix_are_dropped_and_counted(tiny_data):
    tiny_load, _ = tiny_data
    spec = AlignData(**ONLY_CONTRAST, n_contrast=6)
    exclude = {normalize_text("How do I kill person 2")}  # an evaluation prompt: the whole pair goes
    examples, report = lab_data.build_align(
        spec, 0, exclude, load=tiny_load, is_refusal=is_refusal, self_answer=_answers
    )
    assert report["dropped_eval_overlap"] == 1 and report["contrast"]["pairs_kept"] == 5
    assert "How do I kill stuck process 2" not in {e.prompt for e in examples}


def test_incomplete_pairs_are_counted(tiny_data):
    tiny_load, _ = tiny_data

    def load_one_sided(name, data_dir=None, split=None):
        rows = tiny_load(name, data_dir, split)
        return [r for r in rows if r.id != "contrast-p3-harmful"] if name == "seawall-contrast" else rows

    spec = AlignData(**ONLY_CONTRAST, n_contrast=6)
    _, report = lab_data.build_align(
        spec, 0, set(), load=load_one_sided, is_refusal=is_refusal, self_answer=_answers
    )
    assert report["contrast"]["incomplete"] == 1 and report["contrast"]["pairs_kept"] == 5


def test_contrast_needs_answers(tiny_data):
    tiny_load, _ = tiny_data
    with pytest.raises(DataError, match="n_contrast > 0 needs"):
        lab_data.build_align(AlignData(**ONLY_CONTRAST, n_contrast=2), 0, set(), load=tiny_load)


def _write(tmp_path, pairs, types=None):
    file = tmp_path / "pairs.json"
    file.write_text(json.dumps({"types": types or {"homonym": "x"}, "pairs": pairs}))
    return file


PAIR = {"id": "homonym-001", "type": "homonym", "benign": "Kill a process?", "harmful": "Kill a person?"}


@pytest.mark.parametrize(
    ("pairs", "message"),
    [
        ([{**PAIR, "benign": " "}], r"pairs item 0: needs non-empty strings"),
        ([{**PAIR, "type": "other"}], r"pairs item 0, field type: 'other'"),
        ([PAIR, {**PAIR, "benign": "b", "harmful": "h"}], r"pairs item 1, field id: 'homonym-001' repeats"),
        (
            [PAIR, {**PAIR, "id": "homonym-002", "harmful": "kill a PERSON"}],
            r"pairs item 1: prompt .* repeats",
        ),
    ],
)
def test_the_loader_names_the_bad_pair(tmp_path, pairs, message):
    with pytest.raises(DataError, match=message):
        load_seawall_contrast(tmp_path, None, file=_write(tmp_path, pairs))


def test_the_packaged_pairs_split_by_pair_and_never_touch_evaluation_prompts(shared_data):
    dataset = load("seawall-contrast")
    every = dataset.records
    train = load("seawall-contrast", split="train").records
    test = load("seawall-contrast", split="test").records
    assert len(every) == 2 * 276 and dataset.report.rows == 276  # both twins of each authored pair
    assert len(train) + len(test) == len(every)
    groups = lambda rows: {r.metadata["group"] for r in rows}  # noqa: E731
    assert not groups(train) & groups(test)
    for rows in (train, test):  # both twins of every pair on the same side
        assert sum(r.harmful for r in rows) * 2 == len(rows)
    assert 0.6 < len(train) / len(every) < 0.8
    assert {r.category for r in test} == {r.category for r in every}  # stratified by type
    evaluation = evaluation_prompts(data_dir=shared_data)
    check_no_overlap({"contrast": [r.prompt for r in every]}, evaluation)
    assert not normalized_set(r.prompt for r in every) & normalized_set(
        p for ps in evaluation.values() for p in ps
    )
