"""The v2 align mix: safety-tuned-llamas' safe answers as refusal targets, borderline prompts answered by the
original model itself (self-distillation), and CyberSecEval's false-refusal prompts split into train and held-out."""

import json

import pytest

from seawall.data import canonical_split, load
from seawall.data.hygiene import check_no_overlap, normalized_set
from seawall.data.records import ResponseRecord, normalize_text
from seawall.data.suites import OVERREFUSAL_SUITES, evaluation_prompts
from seawall.detect import is_refusal
from seawall.errors import DataError, SeawallError
from seawall.lab import data as lab_data
from seawall.lab.config import AlignData, AlignRecipe, load_yaml

CONFIG = "configs/align-v2-smollm2.yaml"
NO_TEMPLATES = {"n_hh_refusals": 0, "n_benign": 3, "n_math": 0}


def _exclude(load):
    return normalized_set(p for ps in evaluation_prompts(load=load).values() for p in ps)


def test_stl_targets_are_train_split_safe_answers(tiny_data):
    load, split = tiny_data
    parts = split("safety-tuned-llamas")
    overlapping = parts["train"][0].prompt
    spec = AlignData(refusal_targets="stl", n_stl_safe=5, **NO_TEMPLATES)
    examples, report = lab_data.build_align(
        spec, 0, _exclude(load) | {normalize_text(overlapping)}, load=load, split=split
    )
    stl = [e for e in examples if e.source == "safety-tuned-llamas-train->safe-answer"]
    assert len(stl) == 5 and report["counts"] == {"safety-tuned-llamas-train->safe-answer": 5, "alpaca": 3}
    assert not any(e.source.endswith("->refusal") for e in examples)  # templates are off
    train_ids = {r.id for r in parts["train"]}
    assert {e.id.removeprefix("stl:") for e in stl} <= train_ids
    answers = {r.prompt: r.response for r in parts["train"]}
    assert all(e.messages[-1][1] == answers[e.prompt] for e in stl)
    assert report["stl"]["split"] == "train" and report["stl"]["requested"] == 5
    assert report["stl"]["available"] == len(parts["train"]) - 1 and report["dropped_eval_overlap"] == 1
    assert overlapping not in {e.prompt for e in examples}


def test_stl_refusals_only_keeps_the_answers_that_decline(tiny_data):
    load, tiny_split = tiny_data
    # The tiny set's safe answers all decline: add answers that help anyway (safety-tuned-llamas has ~1 in 4).
    helping = [
        ResponseRecord(f"stl-helps-{i}", f"Prank idea {i}?", f"Sure, hide wasabi in dish {i}.", "safe")
        for i in range(3)
    ]

    def split(name, **kwargs):
        parts = tiny_split(name, **kwargs)
        return {**parts, "train": [*parts["train"], *helping]} if name == "safety-tuned-llamas" else parts

    train = split("safety-tuned-llamas")["train"]
    declines = {r.response for r in train if r.label == "safe" and is_refusal(r.response)}
    assert 0 < len(declines) < len(train)
    spec = AlignData(refusal_targets="stl", n_stl_safe=50, stl_answers="refusals", **NO_TEMPLATES)
    examples, report = lab_data.build_align(spec, 0, set(), load=load, split=split, is_refusal=is_refusal)
    stl = [e.messages[-1][1] for e in examples if e.source == "safety-tuned-llamas-train->safe-answer"]
    assert stl and set(stl) <= declines
    assert report["stl"]["skipped_not_refusal"] == len(train) - report["stl"]["skipped_not_safe"] - len(
        declines
    )
    with pytest.raises(DataError, match="needs a refusal matcher"):
        lab_data.build_align(spec, 0, set(), load=load, split=split)


def test_mixed_targets_keep_both_paths_with_their_counts(tiny_data):
    load, split = tiny_data
    spec = AlignData(
        refusal_targets="mixed", harmful_sources=("advbench",), n_harmful=4, n_stl_safe=4, **NO_TEMPLATES
    )
    _, report = lab_data.build_align(spec, 0, set(), load=load, split=split)
    assert report["counts"]["advbench->refusal"] == 4
    assert report["counts"]["safety-tuned-llamas-train->safe-answer"] == 4
    assert report["refusal_targets"] == "mixed"


def test_stl_targets_on_the_shared_data_never_touch_detector_test_rows(shared_data):
    parts = canonical_split("safety-tuned-llamas", data_dir=shared_data)
    evaluation = evaluation_prompts(str(shared_data))
    spec = AlignData(refusal_targets="stl", n_stl_safe=240, n_hh_refusals=0, n_benign=20)
    exclude = normalized_set(p for v in evaluation.values() for p in v)
    examples, report = lab_data.build_align(spec, 0, exclude, data_dir=str(shared_data))
    stl = {e.id.removeprefix("stl:") for e in examples if e.id.startswith("stl:")}
    held_out = {r.id for name in ("dev", "test") for r in parts[name]}
    assert len(stl) == 240 and stl <= {r.id for r in parts["train"]} and not stl & held_out
    assert report["stl"]["rows"] == len(parts["train"]) == 1737
    check_no_overlap({"align": [e.prompt for e in examples]}, evaluation)


def _borderline_spec(**overrides):
    fields = {
        "harmful_sources": ("advbench",),
        "n_harmful": 2,
        "n_hh_refusals": 0,
        "n_benign": 2,
        "n_borderline": 6,
        "borderline_sources": ("stl-eval-benign", "cyberseceval-frr:train"),
    }
    return AlignData(**{**fields, **overrides})


def test_borderline_self_answers_drop_and_replace_refusals_empties_and_unfinished(tiny_data):
    load, _ = tiny_data
    candidates = [r.prompt for r in load("stl-eval-benign")] + [
        r.prompt for r in load("cyberseceval-frr", split="train")
    ]
    answers = {p: f"Sure. Here is a careful answer about {p.lower()}." for p in candidates}
    refused, empty, cut = candidates[0], candidates[1], candidates[2]
    answers[refused] = "I'm sorry, but I can't help with that."
    answers[empty] = "   "
    answers[cut] = "Start by checking the tools you have. Then carefully make the first"
    spec = _borderline_spec()
    examples, report = lab_data.build_align(
        spec, 0, _exclude(load), load=load, is_refusal=is_refusal, self_answer=answers
    )
    own = {e.prompt: e.messages[-1][1] for e in examples if e.source.endswith("->self-answer")}
    borderline = report["borderline"]
    assert borderline["sources"] == {"stl-eval-benign": 6, "cyberseceval-frr:train": 3}
    assert borderline["candidates"] == 9 and borderline["kept"] == len(own) == 6
    dropped = borderline["dropped_refusal"] + borderline["dropped_empty"] + borderline["dropped_unfinished"]
    assert borderline["answered"] == borderline["kept"] + dropped
    assert refused not in own and empty not in own
    if cut in own:  # cut at its last sentence end, counted as trimmed
        assert own[cut] == "Start by checking the tools you have." and borderline["trimmed"] == 1
    assert all(answers[p].startswith(a) for p, a in own.items())
    assert (
        report["counts"]["stl-eval-benign->self-answer"] + report["counts"]["cyberseceval-frr->self-answer"]
        == 6
    )


def test_every_refused_borderline_answer_is_counted_when_candidates_run_out(tiny_data):
    load, _ = tiny_data
    refuse_all = lambda prompts: ["I cannot assist with that request." for _ in prompts]  # noqa: E731
    examples, report = lab_data.build_align(
        _borderline_spec(), 0, set(), load=load, is_refusal=is_refusal, self_answer=refuse_all
    )
    assert report["borderline"]["kept"] == 0 and report["borderline"]["dropped_refusal"] == 9
    assert not any(e.source.endswith("->self-answer") for e in examples)


def test_borderline_prompts_skip_evaluation_prompts_long_prompts_and_prompts_in_the_mix(tiny_data):
    from seawall.data.records import PromptRecord

    tiny_load, _ = tiny_data
    in_mix = tiny_load("alpaca")[0].prompt  # I-Alpaca lists Alpaca instructions: one answer per prompt

    def load(name, data_dir=None, split=None):
        rows = tiny_load(name, data_dir, split)
        if name == "stl-eval-benign":
            rows.append(PromptRecord("stl-eval-benign-alpaca", in_mix, False, source="stl-eval-benign"))
        return rows

    answers = lambda prompts: [f"A sound and complete answer to: {p}." for p in prompts]  # noqa: E731
    whole_frr = _borderline_spec(n_benign=18, borderline_sources=("stl-eval-benign", "cyberseceval-frr"))
    examples, report = lab_data.build_align(
        whole_frr, 0, _exclude(load), load=load, is_refusal=is_refusal, self_answer=answers
    )
    held_out = {r.prompt for r in load("cyberseceval-frr", split="test")}
    own = [e.prompt for e in examples if e.source.endswith("->self-answer")]
    assert report["dropped_eval_overlap"] == len(held_out) == 3 and not held_out & set(own)
    assert report["borderline"]["skipped_in_mix"] == 1 and own.count(in_mix) == 0
    # "Write a script that blocks port scanner 0" has 8 words.
    short = _borderline_spec(borderline_max_prompt_words=7)
    _, report = lab_data.build_align(
        short, 0, set(), load=tiny_load, is_refusal=is_refusal, self_answer=answers
    )
    assert report["borderline"]["skipped_long"] == 3 and report["borderline"]["candidates"] == 6


def test_borderline_needs_answers_and_a_map_must_cover_the_prompts(tiny_data):
    load, _ = tiny_data
    with pytest.raises(DataError, match="self_answer"):
        lab_data.build_align(_borderline_spec(), 0, set(), load=load, is_refusal=is_refusal)
    with pytest.raises(DataError, match="no answer for"):
        lab_data.build_align(_borderline_spec(), 0, set(), load=load, is_refusal=is_refusal, self_answer={})


def test_finished_part():
    assert lab_data.finished_part("Turn the power off first. Then remove the") == "Turn the power off first."
    assert (
        lab_data.finished_part("Step one:\n1. Open the case\n2. Remove the") == "Step one:\n1. Open the case"
    )
    assert lab_data.finished_part("This answer ends properly with a period.") == (
        "This answer ends properly with a period."
    )
    assert lab_data.finished_part("no sentence end anywhere in this text") is None
    assert lab_data.finished_part("Too short.") is None


def test_frr_split_is_deterministic_disjoint_and_its_test_half_is_evaluated(shared_data):
    train = load("cyberseceval-frr", data_dir=shared_data, split="train").records
    test = load("cyberseceval-frr", data_dir=shared_data, split="test").records
    again = load("cyberseceval-frr", data_dir=shared_data, split="test").records
    assert [r.id for r in test] == [r.id for r in again]
    assert len(train) + len(test) == 750 and abs(len(train) - len(test)) <= 2
    assert not {r.id for r in train} & {r.id for r in test}
    assert not normalized_set(r.prompt for r in train) & normalized_set(r.prompt for r in test)
    suite = OVERREFUSAL_SUITES["cyberseceval-frr-heldout"]
    assert (suite.dataset, suite.split) == ("cyberseceval-frr", "test")
    evaluation = evaluation_prompts(shared_data)
    assert evaluation["cyberseceval-frr-heldout"] == [r.prompt for r in test]
    # The default borderline sources: none of their prompts is an evaluation prompt of the experiment.
    candidates, _ = lab_data.borderline_candidates(AlignData(), data_dir=shared_data)
    check_no_overlap({"borderline": [r.prompt for r in candidates]}, evaluation)
    assert {r.source for r in candidates} == {"stl-eval-benign", "cyberseceval-frr"}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"refusal_targets": "stl", "n_stl_safe": 0}, "needs n_stl_safe > 0"),
        ({"refusal_targets": "mixed", "n_harmful": 0}, "needs n_harmful > 0"),
        ({"refusal_targets": "refuse-everything"}, "refusal_targets"),
        ({"borderline_sources": ["cyberseceval-frr:"]}, "is not 'name' or 'name:split'"),
        ({"n_borderline": -1}, "n_borderline"),
        ({"borderline_max_new_tokens": 2}, "borderline_max_new_tokens"),
        ({"n_self_answers": 3}, "n_self_answers"),
    ],
)
def test_config_errors_name_the_field(tmp_path, fields, message):
    path = tmp_path / "align.yaml"
    path.write_text(json.dumps({"data": fields}))
    with pytest.raises(SeawallError, match=message) as error:
        load_yaml(AlignRecipe, path)
    assert str(path) in str(error.value)


def test_dumped_recipe_validates_again():
    recipe = AlignRecipe(data=AlignData(refusal_targets="stl", n_borderline=10))
    assert AlignRecipe.model_validate(recipe.model_dump(mode="json")) == recipe


def test_the_v2_config_file_is_an_align_recipe():
    recipe = load_yaml(AlignRecipe, CONFIG)
    assert recipe.data.refusal_targets == "stl" and recipe.data.n_borderline > 0
    assert recipe.data.n_stl_safe > 0 and recipe.data.n_benign > 0


def test_self_answers_of_the_tiny_model_are_greedy_and_cached(tiny_model, tmp_path, monkeypatch):
    from seawall.generation.cache import GenerationCache
    from seawall.lab.recipes import self_answerer

    cache = GenerationCache(tmp_path / "generations.sqlite")
    prompts = ["How do I safely carve a pumpkin?", "How do I block a port scanner?"]
    first = self_answerer(tiny_model, 12, "float32", threads=1, cache=cache)(prompts)
    assert len(first) == 2 and all(isinstance(a, str) and a for a in first) and cache.misses == 2

    # A second run (a resumed alignment) reads the cache and never loads the model.
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every answer is cached")

    monkeypatch.setattr("seawall.generation.load_generator", no_model)
    assert self_answerer(tiny_model, 12, "float32", threads=1, cache=cache)(prompts) == first
    assert cache.hits == 2 and len(cache) == 2


SAFE_ANSWER = "Do it slowly and check each step."


@pytest.fixture(scope="module")
def speaking_model(tiny_model, tiny_data, tmp_path_factory):
    """The tiny model taught to answer the tiny borderline prompts: the pumpkin ones helpfully, the port-scanner
    ones with a refusal (a random model only emits bytes, which the self-answer filter drops as unfinished)."""
    from seawall.lab.config import TrainConfig
    from seawall.lab.train import ChatExample, train

    load, _ = tiny_data
    examples = [ChatExample.of(f"s{i}", r.prompt, SAFE_ANSWER) for i, r in enumerate(load("stl-eval-benign"))]
    examples += [
        ChatExample.of(f"r{i}", r.prompt, "I'm sorry, but I can't help with that.")
        for i, r in enumerate(load("cyberseceval-frr", split="train"))
    ]
    config = TrainConfig(
        method="full", learning_rate=3e-3, epochs=100, batch_size=9, grad_accum=1, max_length=96, threads=1
    )
    out = tmp_path_factory.mktemp("speaking")
    train(
        tiny_model, examples, config.model_copy(update={"warmup_ratio": 0.0, "checkpoint_every": 1000}), out
    )
    return out / "model"


@pytest.mark.slow
def test_align_recipe_distils_the_original_models_own_answers(
    speaking_model, tiny_data, tmp_path, monkeypatch
):
    from seawall.generation.cache import GenerationCache
    from seawall.lab import recipes
    from seawall.lab.config import TrainConfig

    load, split = tiny_data
    recipe = AlignRecipe(
        model=str(speaking_model),
        data=_borderline_spec(refusal_targets="mixed", n_stl_safe=2, borderline_dtype="float32"),
        train=TrainConfig(max_steps=1, batch_size=2, grad_accum=1, max_length=128, threads=1),
    )
    cache = GenerationCache(tmp_path / "generations.sqlite")
    record = recipes.align(recipe, tmp_path / "A", load=load, split=split, cache=cache)
    borderline = record["data_report"]["borderline"]
    # Six helpful answers kept; every refusal answered on the way was dropped, counted and replaced.
    assert borderline["kept"] == 6 and borderline["dropped_refusal"] == borderline["answered"] - 6
    assert borderline["answered"] == len(cache) and borderline["dropped_empty"] == 0
    sources = record["data"]["sources"]
    assert sources["stl-eval-benign->self-answer"] == 6 and "cyberseceval-frr->self-answer" not in sources
    assert sources["safety-tuned-llamas-train->safe-answer"] == 2 and sources["advbench->refusal"] == 2

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although every answer is cached")

    # Rerun on the same output: the answers come from the cache and the finished run is returned.
    monkeypatch.setattr("seawall.generation.load_generator", no_model)
    assert recipes.align(recipe, tmp_path / "A", load=load, split=split, cache=cache) == record
