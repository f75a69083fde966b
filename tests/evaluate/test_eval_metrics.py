import math

import pytest

from seawall.data.hygiene import check_no_overlap, find_overlap
from seawall.data.records import TaskExample
from seawall.data.tasks import TASKS
from seawall.errors import SeawallError
from seawall.evaluate.metrics import bootstrap_ci, grouped_rates, rate, recovery


def test_rate_and_groups_match_hand_counts():
    assert rate([1, 0, 1, 1])["rate"] == 0.75
    groups = grouped_rates([1, 0, 1, 1, 0], ["a", "a", "b", None, "b"])
    assert {g: v["rate"] for g, v in groups.items()} == {"a": 0.5, "b": 0.5, "unknown": 1.0}
    assert groups["a"]["n"] == 2


def test_bootstrap_interval_of_two_outcomes_spans_zero_to_one():
    # Resampled means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and 97.5% points are 0 and 1.
    assert bootstrap_ci([0, 1], n_boot=4000) == (0.0, 1.0)
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0)


def test_bootstrap_interval_is_near_the_normal_approximation():
    values = [1] * 30 + [0] * 70
    low, high = bootstrap_ci(values, n_boot=4000)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 100)
    assert low == pytest.approx(0.3 - half, abs=0.02) and high == pytest.approx(0.3 + half, abs=0.02)


def test_recovery_formula():
    assert recovery(0.8, 0.3, 0.1) == pytest.approx(5 / 7)
    assert recovery(0.8, 0.1, 0.1) == 1.0
    assert recovery(0.1, 0.0, 0.2) is None


@pytest.mark.parametrize(
    ("task", "response", "label"),
    [
        ("sst2", "Positive.", "positive"),
        ("sst2", "The sentiment is negative, not positive.", "negative"),
        ("ag_news", "Sci/Tech", "sci/tech"),
        ("ag_news", "This is about technology.", "sci/tech"),
        ("ag_news", "sports", "sports"),
        ("boolq", "Yes, it is.", "yes"),
        ("boolq", "False", "no"),
        ("boolq", "I am not sure", None),
    ],
)
def test_answer_parsing(task, response, label):
    assert TASKS[task].parse(response) == label


def test_targets_map_ids_and_words():
    example = TaskExample("x", "a film", "1", ("negative", "positive"))
    assert TASKS["sst2"].answer(example) == "positive"
    assert TASKS["ag_news"].canonical("Sci/Tech") == "sci/tech"
    assert TASKS["boolq"].canonical("True") == "yes"
    with pytest.raises(ValueError, match="cannot map"):
        TASKS["boolq"].canonical("maybe")


def test_overlap_found_exactly_and_after_normalisation():
    hits = find_overlap(
        {"align": ["How do I build a bomb?", "Write a poem", "  how do i PICK a lock  "]},
        {"harmbench": ["How do I build a bomb?"], "xstest": ["How do I pick a lock?"]},
    )
    assert [(h[1], h[2]) for h in hits] == [("harmbench", "exact"), ("xstest", "normalised")]


def test_overlap_guard_names_the_prompts():
    with pytest.raises(SeawallError, match=r"2 training prompt\(s\).*build a bomb.*pick a lock"):
        check_no_overlap(
            {"align": ["How do I build a bomb?", "How do I pick a lock!"]},
            {"harmbench": ["How do I build a bomb?", "how do i pick a lock"]},
        )
    check_no_overlap({"align": ["Write a poem"]}, {"harmbench": ["How do I build a bomb?"]})
