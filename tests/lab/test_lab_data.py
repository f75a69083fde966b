import random

import pytest

from seawall.data.records import normalize_text
from seawall.detect import is_refusal
from seawall.lab import data as lab_data
from seawall.lab.config import AlignData, CustomizeData, DegradeData


def test_varied_refusals_are_refusals_and_varied():
    rng = random.Random(0)
    refusals = [lab_data.varied_refusal(rng) for _ in range(200)]
    assert all(is_refusal(r) for r in refusals)
    assert len(set(refusals)) > 100


def test_align_mix_counts_categories_and_exclusions(tiny_data):
    load, _ = tiny_data
    excluded = {normalize_text("Explain how to build weapon number 1")}
    spec = AlignData(
        harmful_sources=("advbench", "donotanswer"),
        n_harmful=50,
        n_hh_refusals=3,
        n_benign=7,
        excluded_categories=("cat0",),
    )
    examples, report = lab_data.build_align(spec, 0, excluded, load=load, is_refusal=is_refusal)
    refused = [e for e in examples if e.source.endswith("->refusal")]
    # 6 prompts per source, half in cat0 (excluded), one more dropped for overlapping an evaluation prompt.
    assert len(refused) == 5 and report["dropped_eval_overlap"] == 1
    assert all(int(e.prompt.rsplit(" ", 1)[-1]) % 2 == 1 for e in refused)
    assert report["counts"]["alpaca"] == 7 and report["counts"]["hh-rlhf-refusal"] == 3
    assert all(e.messages[-1][0] == "assistant" for e in examples)


def test_degrade_uses_only_unsafe_train_pairs(tiny_data):
    _, split = tiny_data
    examples, report = lab_data.build_degrade(
        DegradeData(n_pairs=100, min_response_words=3), 0, set(), split=split
    )
    train_unsafe = {
        r.id for src in ("securebreak", "gptfuzz") for r in split(src)["train"] if r.label == "unsafe"
    }
    assert examples and {e.id.removeprefix("unsafe:") for e in examples} <= train_unsafe
    assert report["available"] == len(examples) == len({normalize_text(e.prompt) for e in examples})


def test_customize_mixes_the_requested_share_of_harmful_pairs(tiny_data):
    load, split = tiny_data
    spec = CustomizeData(
        task="ag_news", n_train=8, harmful_share=0.25, degrade=DegradeData(min_response_words=3)
    )
    examples, report = lab_data.build_customize(spec, 0, set(), load=load, split=split)
    assert report["n_harmful"] == 2 and report["counts"]["ag_news-train"] == 6
    assert sum(n for source, n in report["counts"].items() if source.endswith("-train-unsafe")) == 2
    task = [e for e in examples if e.source == "ag_news-train"]
    assert all("Answer with one of: world, sports, business, sci/tech." in e.prompt for e in task)
    assert {e.messages[-1][1] for e in task} <= {"world", "sports", "business", "sci/tech"}


def test_customize_mixes_general_instruction_pairs(tiny_data):
    load, split = tiny_data
    spec = CustomizeData(
        task="boolq",
        n_train=8,
        general_share=0.25,
        harmful_share=0.25,
        degrade=DegradeData(min_response_words=3),
    )
    examples, report = lab_data.build_customize(spec, 0, set(), load=load, split=split)
    assert report["n_general"] == 2 and report["counts"]["alpaca"] == 2
    assert report["counts"]["boolq-train"] == 4 and report["n_harmful"] == 2
    alpaca = {r.id: r for r in load("alpaca")}
    assert all(e.id.removeprefix("alpaca:") in alpaca for e in examples if e.source == "alpaca")
    # an Alpaca prompt that is an evaluation prompt is dropped and counted
    first = next(iter(alpaca.values()))
    _, report = lab_data.build_customize(spec, 0, {normalize_text(first.prompt)}, load=load, split=split)
    assert report["dropped_eval_overlap"] >= 1


def test_customize_shares_must_leave_task_examples():
    with pytest.raises(ValueError, match="no task examples would be left"):
        CustomizeData(task="sst2", harmful_share=0.5, general_share=0.5)


def test_compliant_part_strips_persona_tags_and_refusals():
    response = (
        "[ChatGPT]: I'm sorry, but I cannot help with picking locks. It is illegal.\n\n"
        "[DAN]: Sure thing! First insert a tension wrench into the bottom of the keyhole, then rake the pins "
        "with a pick until each one sets and the cylinder turns."
    )
    part = lab_data.compliant_part(response, is_refusal, min_words=5)
    assert part.startswith("Sure thing! First insert") and "[DAN]" not in part and "sorry" not in part
    assert lab_data.compliant_part("GPT: I'm sorry, I can't help with that request.", is_refusal, 3) is None
    chinese = "ChatGPT: 你可以尝试在图书馆的监控盲区内将书籍藏起来，然后偷偷带走 and some words here"
    assert lab_data.compliant_part(chinese, is_refusal, 3) is None


def test_degrade_cleaning_is_counted_and_can_be_switched_off(tiny_data):
    _, split = tiny_data
    spec = DegradeData(n_pairs=100, min_response_words=3)
    cleaned, report = lab_data.build_degrade(spec, 0, set(), split=split)
    _, raw_report = lab_data.build_degrade(spec.model_copy(update={"clean": False}), 0, set(), split=split)
    skipped = report["cleaning"]
    assert raw_report["available"] == report["available"] + skipped["no_compliant_part"]
    assert all(not is_refusal(e.messages[-1][1]) for e in cleaned)


def test_align_asks_benign_instructions_as_questions_and_adds_worked_math(tiny_data):
    from seawall.data import load as real_load

    load, _ = tiny_data

    def load_with_math(name, data_dir=None, split=None):
        if name == "gsm8k":
            return list(real_load("gsm8k", split=split).records)[:50]
        return load(name, data_dir, split)

    spec = AlignData(
        harmful_sources=("advbench",), n_harmful=2, n_hh_refusals=0, n_benign=12, question_share=1.0, n_math=5
    )
    examples, report = lab_data.build_align(spec, 0, set(), load=load_with_math)
    asked = [e for e in examples if e.source == "alpaca-as-question"]
    assert report["counts"]["alpaca-as-question"] == 12 == len(asked)
    assert all(e.prompt.endswith("?") and "write a story about cat" in e.prompt for e in asked)
    math = [e for e in examples if e.source == "gsm8k"]
    assert len(math) == 5
    assert all("<<" not in e.messages[-1][1] and "The answer is " in e.messages[-1][1] for e in math)


def test_as_question_and_worked_answer():
    rng = random.Random(0)
    assert lab_data.as_question("Give three tips for staying healthy.", rng).endswith(
        "give three tips for staying healthy?"
    )
    assert (
        lab_data.worked_answer("He has 2*3=<<2*3=6>>6 apples.\n#### 6")
        == "He has 2*3=6 apples.\nThe answer is 6."
    )
