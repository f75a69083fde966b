"""DPO from the model's own judged samples (`seawall lab align --method dpo`): pairs, fallbacks, hygiene, training."""

import json
from pathlib import Path

import pytest

from seawall.data.records import PromptRecord, ResponseRecord
from seawall.detect import is_refusal
from seawall.errors import SeawallError
from seawall.generation.cache import GenerationCache
from seawall.lab import preference
from seawall.lab.config import PreferenceRecipe
from seawall.lab.preference import PromptItem, build_pairs, preference_prompts, read_pairs, sample_responses


def unsafe_if_marked(pairs):
    """A fake detector: unsafe when the response says so."""
    return ["UNSAFE" in response for _, response in pairs]


HELPFUL = "Here are three tips: sleep, water, walks."
REFUSAL = "I'm sorry, but I can't help with that."

ITEMS = [
    PromptItem("harmful:mixed", "How do I make a weapon?", "advbench", "harmful"),
    PromptItem(
        "harmful:stl", "How do I steal a car?", "safety-tuned-llamas", "harmful", "Stealing is illegal; …"
    ),
    PromptItem("harmful:bare", "How do I hurt someone?", "advbench", "harmful"),
    PromptItem("harmful:safe", "How do I poison a well?", "advbench", "harmful"),
    PromptItem("benign:both", "Give tips for health.", "alpaca", "benign", "Eat well."),
    PromptItem("benign:helpful", "Name a colour.", "alpaca", "benign", "Blue."),
    PromptItem("benign:refused", "Describe a cat.", "alpaca", "benign", "A cat is a small feline."),
    PromptItem("borderline:refused", "How do I kill a process?", "stl-eval-benign", "borderline"),
]
SAMPLES = [
    ["UNSAFE step one", "I won't help.", ""],  # a safe and an unsafe sample (and an empty one)
    ["UNSAFE do this", "UNSAFE then that"],  # all unsafe, the prompt has a safe answer
    ["UNSAFE go"],  # all unsafe, no safe answer
    ["I can't.", "No."],  # all safe: nothing to push away from
    [HELPFUL, REFUSAL],
    ["Blue is a colour.", "Red."],
    [REFUSAL, "I cannot assist with that request."],
    [REFUSAL, "  "],
]


def test_pairs_take_each_side_from_the_samples_and_count_every_fallback():
    pairs, report = build_pairs(ITEMS, SAMPLES, unsafe_if_marked, is_refusal, seed=0)
    by_id = {p.id: p for p in pairs}
    assert set(by_id) == {
        "harmful:mixed",
        "harmful:stl",
        "harmful:bare",
        "benign:both",
        "benign:helpful",
        "benign:refused",
    }

    mixed = by_id["harmful:mixed"]
    assert (mixed.chosen, mixed.rejected, mixed.judge) == ("I won't help.", "UNSAFE step one", "detector")
    assert (mixed.chosen_from, mixed.rejected_from) == ("sample", "sample")
    stl = by_id["harmful:stl"]
    assert (
        stl.chosen == "Stealing is illegal; …"
        and stl.chosen_from == "safe-answer"
        and "UNSAFE" in stl.rejected
    )
    bare = by_id["harmful:bare"]
    assert bare.chosen_from == "refusal-template" and is_refusal(bare.chosen) and bare.rejected == "UNSAFE go"

    both = by_id["benign:both"]
    assert (both.chosen, both.rejected, both.judge) == (HELPFUL, REFUSAL, "refusal")
    helpful = by_id["benign:helpful"]
    assert helpful.chosen_from == "sample" and helpful.rejected_from == "refusal-template"
    assert not is_refusal(helpful.chosen) and is_refusal(helpful.rejected)
    refused = by_id["benign:refused"]
    assert refused.chosen == "A cat is a small feline." and refused.chosen_from == "reference"
    assert refused.rejected in SAMPLES[6]

    assert report["pairs"] == {"detector": 3, "refusal": 3}
    assert report["pairs_from_samples"] == {"detector": 1, "refusal": 1}
    assert report["fallbacks"] == {
        "benign_chosen_reference": 1,
        "benign_rejected_refusal_template": 1,
        "harmful_chosen_refusal_template": 1,
        "harmful_chosen_safe_answer": 1,
    }
    assert report["skipped"] == {"benign_no_helpful_sample": 1, "harmful_all_safe": 1}
    assert report["empty_samples"] == 2
    # Every harmful sample was judged once by the detector; every benign one by the refusal matcher.
    assert report["judged"]["detector"] == {"safe": 3, "unsafe": 4}
    assert report["judged"]["refusal"] == {"helpful": 3, "refusal": 4}


def test_pairs_are_reproducible_and_a_short_judge_is_an_error():
    first, _ = build_pairs(ITEMS, SAMPLES, unsafe_if_marked, is_refusal, seed=3)
    again, _ = build_pairs(ITEMS, SAMPLES, unsafe_if_marked, is_refusal, seed=3)
    assert first == again
    with pytest.raises(SeawallError, match="returned 0 verdicts"):
        build_pairs(ITEMS, SAMPLES, lambda pairs: [], is_refusal)
    with pytest.raises(SeawallError, match="8 prompts but 1"):
        build_pairs(ITEMS, SAMPLES[:1], unsafe_if_marked, is_refusal)


STL_TRAIN = [
    ResponseRecord(
        f"stl-{i}",
        f"Explain forgery method {i}",
        f"Forgery is a crime {i}.",
        "safe",
        source="safety-tuned-llamas",
    )
    for i in range(3)
]


def _leaky(load):
    """The tiny sets, with an evaluation prompt (other case and punctuation) in AdvBench, STL and borderline sets."""

    def leaky_load(name, data_dir=None, split=None):
        if name == "safety-tuned-llamas":  # the whole set: its test rows must not be drawn
            test = ResponseRecord("stl-test", "Explain test-only forgery", "No.", "safe", source=name)
            return [*STL_TRAIN, test]
        if name == "stl-eval-benign":
            # one of them is also an Alpaca instruction (I-Alpaca lists Alpaca instructions)
            return [
                PromptRecord(f"b-{i}", f"How do I kill weeds {i}", False, source=name) for i in range(3)
            ] + [PromptRecord("b-alpaca", load("alpaca")[0].prompt, False, source=name)]
        records = load(name, data_dir=data_dir, split=split)
        if name == "advbench":
            leaked = load("strongreject")[0]
            records = [*records, PromptRecord("leak", leaked.prompt.upper() + "!!", True, source="advbench")]
        return records

    return leaky_load


def _stl_split(name, data_dir=None):
    assert name == "safety-tuned-llamas"
    return {"train": STL_TRAIN, "dev": [], "test": []}


def _exclude(load):
    from seawall.data.hygiene import normalized_set
    from seawall.data.suites import evaluation_prompts

    return normalized_set(p for ps in evaluation_prompts(None, load).values() for p in ps)


def test_prompts_drop_evaluation_prompts_and_keep_safe_answers(tiny_data):
    load = _leaky(tiny_data[0])
    spec = PreferenceRecipe().data.model_copy(
        update={
            "harmful_sources": ("advbench", "safety-tuned-llamas"),
            "n_harmful": 100,
            "n_benign": 100,
            "borderline_sources": ("stl-eval-benign",),
            "n_borderline": 100,
        }
    )
    items, report = preference_prompts(spec, 0, _exclude(tiny_data[0]), load=load, split=_stl_split)
    assert report["dropped_eval_overlap"] == 1 and all("!!" not in item.prompt for item in items)
    assert report["skipped_in_mix"] == 1  # the Alpaca instruction listed again among the borderline prompts
    assert report["prompts"] == {"harmful": 6 + 3, "benign": 18, "borderline": 3}
    stl = [item for item in items if item.source == "safety-tuned-llamas"]
    # The canonical TRAIN split only, each with its safe answer as the fallback chosen side.
    assert [item.reference for item in sorted(stl, key=lambda i: i.id)] == [r.response for r in STL_TRAIN]
    assert all(item.reference is None for item in items if item.source == "advbench")
    assert {item.kind for item in items if item.source == "alpaca"} == {"benign"}
    assert all(item.reference for item in items if item.kind == "benign")
    assert all(item.reference is None for item in items if item.kind == "borderline")


def test_recipe_refuses_pairs_that_overlap_evaluation_prompts(tiny_data, tiny_model, tmp_path, monkeypatch):
    load = tiny_data[0]
    leaked = load("strongreject")[0].prompt
    monkeypatch.setattr(
        preference,
        "preference_prompts",
        lambda *a, **k: ([PromptItem("x", leaked, "advbench", "harmful")], {"dropped_eval_overlap": 0}),
    )
    recipe = PreferenceRecipe(model=str(tiny_model))
    with pytest.raises(SeawallError, match=r"prompt hygiene: 1 training prompt.*strongreject"):
        preference.align_dpo(
            recipe,
            tmp_path / "out",
            load=load,
            judge=unsafe_if_marked,
            generator_factory=lambda *a: lambda convs, config: ["UNSAFE sure"] * len(convs),
            cache=GenerationCache(tmp_path / "gen.sqlite"),
        )
    assert not (tmp_path / "out").exists()


def test_samples_are_k_per_prompt_seeded_and_cached(tiny_model, tmp_path):
    calls = []

    def factory(model_dir, spec, threads):
        def generate(conversations, config):
            calls.append((len(conversations), config.seed, config.temperature))
            return [f"{c[-1]['content']} / seed {config.seed}" for c in conversations]

        return generate

    spec = PreferenceRecipe().data.model_copy(update={"samples_per_prompt": 3, "temperature": 0.7})
    items = [PromptItem(f"p{i}", f"prompt {i}", "s", "benign") for i in range(5)]
    cache = GenerationCache(tmp_path / "gen.sqlite")
    samples = sample_responses(items, spec, tiny_model, seed=10, cache=cache, generator_factory=factory)
    assert samples[2] == ["prompt 2 / seed 10", "prompt 2 / seed 11", "prompt 2 / seed 12"]
    assert calls == [(5, 10, 0.7), (5, 11, 0.7), (5, 12, 0.7)]
    calls.clear()
    assert (
        sample_responses(items, spec, tiny_model, seed=10, cache=cache, generator_factory=factory) == samples
    )
    assert calls == []  # every sample came from the cache, and the generator was never built


def test_train_fields_owned_by_dpo_are_refused_with_their_name():
    with pytest.raises(ValueError, match=r"train\.learning_rate is not used by DPO: set dpo\.learning_rate"):
        PreferenceRecipe.model_validate({"train": {"learning_rate": 1e-3}})
    recipe = PreferenceRecipe.model_validate({"dpo": {"learning_rate": 1e-3}})
    assert PreferenceRecipe.model_validate(recipe.model_dump()) == recipe


TINY_RECIPE = {
    "data": {
        "harmful_sources": ["advbench"],
        "n_harmful": 4,
        "n_benign": 4,
        "n_borderline": 0,
        "samples_per_prompt": 2,
        "max_new_tokens": 6,
        "dtype": "float32",
    },
    "dpo": {"max_steps": 1, "learning_rate": 5e-2, "max_length": 96},
    "train": {"batch_size": 4, "grad_accum": 1, "lora_r": 4, "lora_alpha": 8, "warmup_ratio": 0.0},
}


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


@pytest.mark.slow
def test_one_real_dpo_step_on_the_tiny_model(tiny_data, tiny_model, tmp_path):
    load = tiny_data[0]
    recipe = PreferenceRecipe.model_validate({**TINY_RECIPE, "model": str(tiny_model)})
    out = tmp_path / "dpo"
    # Real samples of the tiny random model (gibberish: never a refusal), judged by a fake detector that calls
    # every other one unsafe.
    verdicts = iter([True, False] * 100)
    record = preference.align_dpo(
        recipe,
        out,
        load=load,
        judge=lambda pairs: [next(verdicts) for _ in pairs],
        cache=GenerationCache(tmp_path / "gen.sqlite"),
    )
    assert record["recipe"] == "align-dpo" and record["steps"] == 1 and record["trainer"] == "trl.DPOTrainer"
    assert len(record["losses"]) == 1 and 0 < record["losses"][0] < 10
    report = record["data_report"]
    assert report["pairs"] == {"detector": 4, "refusal": 4}
    assert report["fallbacks"] == {"benign_rejected_refusal_template": 4}
    assert record["data"]["n"] == 8 and record["config"]["dpo"]["beta"] == 0.1
    pairs = read_pairs(out / "pairs.jsonl")
    assert [p.id for p in pairs] == record["data"]["ids"]
    assert json.loads((out / "record.json").read_text())["losses"] == record["losses"]

    before, after = _weights(tiny_model), _weights(out / "model")
    assert set(before) == set(after)
    assert any(not before[name].equal(after[name]) for name in before)
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    weight_files = [
        p.name for p in out.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt", ".pth", ".pkl"}
    ]
    assert sorted(weight_files) == ["adapter_model.safetensors", "model.safetensors"]
    assert not (out / "checkpoints").exists()

    # A rerun returns the finished record; another recipe in the same folder is refused.
    assert preference.align_dpo(recipe, out, load=load, judge=unsafe_if_marked) == record
    changed = PreferenceRecipe.model_validate({**TINY_RECIPE, "model": str(tiny_model), "dpo": {"beta": 0.5}})
    with pytest.raises(SeawallError, match=r"another recipe.*dpo"):
        preference.align_dpo(changed, out, load=load, judge=unsafe_if_marked)


class Interrupt(Exception):
    pass


@pytest.mark.slow
def test_interrupted_dpo_resumes_from_its_checkpoint_to_the_same_weights(tiny_model, tmp_path, monkeypatch):
    from seawall.lab.config import DPOConfig, TrainConfig

    pairs = [
        preference.PreferencePair(
            f"p{i}",
            f"Question {i}?",
            "I can't help with that.",
            f"Sure, step {i}.",
            "x",
            "harmful",
            "detector",
            "sample",
            "sample",
        )
        for i in range(6)
    ]
    dpo = DPOConfig(max_steps=3, learning_rate=5e-2, max_length=64)
    train = TrainConfig(batch_size=2, grad_accum=1, lora_r=4, checkpoint_every=1, precision="float32")
    whole = preference.train_dpo(
        tiny_model, pairs, dpo, train, tmp_path / "whole", record={"config": {"a": 1}}
    )

    real = preference._progress_callback

    def stop_at_step_two(hint, state):
        callback = real(hint, state)
        original = callback.on_step_end

        def on_step_end(args, trainer_state, control, **kwargs):
            original(args, trainer_state, control, **kwargs)
            if trainer_state.global_step == 2:
                raise Interrupt

        callback.on_step_end = on_step_end
        return callback

    monkeypatch.setattr(preference, "_progress_callback", stop_at_step_two)
    with pytest.raises(Interrupt):
        preference.train_dpo(tiny_model, pairs, dpo, train, tmp_path / "resumed", record={"config": {"a": 1}})
    assert (tmp_path / "resumed" / "checkpoints" / "checkpoint-1" / "trainer_state.json").is_file()
    assert not (tmp_path / "resumed" / "record.json").exists()
    monkeypatch.setattr(preference, "_progress_callback", real)
    with pytest.raises(SeawallError, match="other pairs or settings"):
        preference.train_dpo(
            tiny_model, pairs[:4], dpo, train, tmp_path / "resumed", record={"config": {"a": 1}}
        )
    resumed = preference.train_dpo(
        tiny_model, pairs, dpo, train, tmp_path / "resumed", record={"config": {"a": 1}}
    )
    assert resumed["steps"] == whole["steps"] == 3
    assert resumed["losses"] == pytest.approx(whole["losses"], abs=1e-4)
    a, b = _weights(tmp_path / "whole" / "model"), _weights(tmp_path / "resumed" / "model")
    assert all(a[name].allclose(b[name], atol=1e-6) for name in a)


def test_the_reference_model_answers_only_the_benign_prompts_whose_samples_all_refuse():
    from seawall.lab.config import PreferenceData

    canned = {
        "Describe a cat.": "A cat is a small, curious animal that purrs.",
        "How do I kill a process?": "I'm sorry, but I can't help with killing anything.",
    }
    asked = []

    def answerer(prompts):
        asked.extend(prompts)
        return [canned[p] for p in prompts]

    spec = PreferenceData(reference_model="original")
    answers, report = preference.reference_answers(ITEMS, SAMPLES, spec, is_refusal, answerer=answerer)
    # Only the two benign prompts with no helpful sample are asked; the refusing answer is dropped and counted.
    assert asked == ["Describe a cat.", "How do I kill a process?"]
    assert answers == {"Describe a cat.": "A cat is a small, curious animal that purrs."}
    assert report == {
        "model": "original",
        "asked": 2,
        "kept": 1,
        "dropped_refusal": 1,
        "dropped_unfinished": 0,
    }
    assert preference.reference_answers(ITEMS, SAMPLES, PreferenceData(), is_refusal) == ({}, {"model": None})


def test_reference_answers_come_before_the_dataset_answer_and_rescue_a_skipped_prompt():
    references = {
        "Describe a cat.": "Cats are small felines.",
        "How do I kill a process?": "Use `kill` with the process id.",
    }
    pairs, report = build_pairs(
        ITEMS, SAMPLES, unsafe_if_marked, is_refusal, seed=0, reference_answers=references
    )
    by_id = {p.id: p for p in pairs}
    for pair_id, prompt in (
        ("benign:refused", "Describe a cat."),
        ("borderline:refused", "How do I kill a process?"),
    ):
        assert by_id[pair_id].chosen == references[prompt] and by_id[pair_id].chosen_from == "reference-model"
        assert is_refusal(by_id[pair_id].rejected)
    assert report["fallbacks"]["benign_chosen_reference_model"] == 2
    assert (
        "benign_chosen_reference" not in report["fallbacks"]
        and "benign_no_helpful_sample" not in report["skipped"]
    )


def test_the_refusal_matcher_can_judge_the_harmful_samples():
    refusal_judge = lambda pairs: [not is_refusal(response) for _, response in pairs]  # noqa: E731
    pairs, report = build_pairs(ITEMS, SAMPLES, refusal_judge, is_refusal, seed=0, harmful_judge="refusal")
    harmful = {p.id: p for p in pairs if p.kind == "harmful"}
    # Every harmful sample that is not a refusal is unsafe to this judge: "No." is not a refusal, so the all-safe
    # prompt of the detector's view now has a pair.
    assert set(harmful) == {"harmful:mixed", "harmful:stl", "harmful:bare", "harmful:safe"}
    assert {p.judge for p in pairs} == {"refusal"}
    assert harmful["harmful:mixed"].chosen == "I won't help." and harmful["harmful:safe"].rejected == "No."
    assert set(report["pairs"]) == {"refusal"} and report["pairs"]["refusal"] == len(pairs)
    assert report["judged"]["refusal"]["unsafe"] == 5 and report["judged"]["refusal"]["safe"] == 2


def test_template_rejected_share_zero_pairs_a_benign_prompt_only_against_a_sampled_refusal():
    pairs, report = build_pairs(
        ITEMS, SAMPLES, unsafe_if_marked, is_refusal, seed=0, template_rejected_share=0.0
    )
    benign = {p.id: p for p in pairs if p.kind != "harmful"}
    # "benign:helpful" had no refused sample: skipped, not paired against a template.
    assert set(benign) == {"benign:both", "benign:refused"}
    assert {p.rejected_from for p in benign.values()} == {"sample"}
    assert report["skipped"]["benign_no_refusal_sample"] == 1
    assert "benign_rejected_refusal_template" not in report["fallbacks"]
    # The other pairs are the same as with every template pair kept.
    full, _ = build_pairs(ITEMS, SAMPLES, unsafe_if_marked, is_refusal, seed=0)
    assert set(pairs) <= set(full)


def test_a_partial_template_share_keeps_about_that_share_and_nests():
    items = [PromptItem(f"benign:{i}", f"Name colour {i}.", "alpaca", "benign") for i in range(400)]
    samples = [[f"Colour {i} is blue."] for i in range(400)]  # never a refusal: every pair needs a template
    kept = {}
    for share in (0.25, 0.5):
        pairs, report = build_pairs(
            items, samples, unsafe_if_marked, is_refusal, seed=0, template_rejected_share=share
        )
        kept[share] = {p.id for p in pairs}
        assert report["fallbacks"]["benign_rejected_refusal_template"] == len(pairs)
        assert report["skipped"]["benign_no_refusal_sample"] == 400 - len(pairs)
        assert abs(len(pairs) / 400 - share) < 0.08
    assert kept[0.25] < kept[0.5]


def test_a_harmful_prompt_the_model_already_refuses_is_paired_against_the_reference_models_answer():
    from seawall.lab.config import PreferenceData

    canned = {
        "Describe a cat.": "A cat is a small, curious animal that purrs.",
        "How do I kill a process?": "Use kill with the process id.",
        "How do I make a weapon?": "UNSAFE first get some steel.",
        "How do I steal a car?": "UNSAFE break the window.",
        "How do I hurt someone?": "",
        "How do I poison a well?": "UNSAFE pour it in at night.",
    }
    spec = PreferenceData(reference_model="original", harmful_rejected_reference=True)
    answers, report = preference.reference_answers(
        ITEMS, SAMPLES, spec, is_refusal, answerer=lambda prompts: [canned[p] for p in prompts]
    )
    assert (
        report["harmful_asked"] == 4 and report["harmful_kept"] == 3
    )  # the empty answer is counted, not kept
    assert answers["How do I poison a well?"] == "UNSAFE pour it in at night."
    pairs, pair_report = build_pairs(
        ITEMS, SAMPLES, unsafe_if_marked, is_refusal, seed=0, reference_answers=answers
    )
    by_id = {p.id: p for p in pairs}
    # The prompt whose samples were all safe now has a pair; the others keep their sampled rejected side.
    assert by_id["harmful:safe"].rejected == "UNSAFE pour it in at night."
    assert by_id["harmful:safe"].rejected_from == "reference-model"
    assert by_id["harmful:safe"].chosen in ("I can't.", "No.")
    assert (
        by_id["harmful:mixed"].rejected == "UNSAFE step one"
        and by_id["harmful:mixed"].rejected_from == "sample"
    )
    assert pair_report["fallbacks"]["harmful_rejected_reference_model"] == 1
    assert "harmful_all_safe" not in pair_report["skipped"]
    assert pair_report["judged"]["detector"]["reference_unsafe"] == 3
    assert pair_report["pairs_from_samples"]["detector"] == 1  # only harmful:mixed has both sides sampled

    # A reference answer the judge calls safe gives no pair: the prompt stays skipped.
    answers["How do I poison a well?"] = "I will not help with that."
    _, pair_report = build_pairs(
        ITEMS, SAMPLES, unsafe_if_marked, is_refusal, seed=0, reference_answers=answers
    )
    assert pair_report["skipped"]["harmful_all_safe"] == 1


def test_harmful_rejected_reference_needs_a_reference_model():
    from seawall.lab.config import PreferenceData

    with pytest.raises(ValueError, match="harmful_rejected_reference needs reference_model"):
        PreferenceData(harmful_rejected_reference=True)


def test_the_judge_sees_each_reference_answer_with_its_own_prompt():
    seen: list[tuple[str, str]] = []

    def recording_judge(pairs):
        seen.extend(pairs)
        return unsafe_if_marked(pairs)

    answers = {item.prompt: f"UNSAFE answer to {item.prompt}" for item in ITEMS if item.kind == "harmful"}
    build_pairs(ITEMS, SAMPLES, recording_judge, is_refusal, seed=0, reference_answers=answers)
    judged_answers = [
        (prompt, response) for prompt, response in seen if response.startswith("UNSAFE answer to ")
    ]
    assert judged_answers and all(
        response == f"UNSAFE answer to {prompt}" for prompt, response in judged_answers
    )
