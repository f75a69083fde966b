import json

import pytest
import torch

from seawall.errors import SeawallError
from seawall.lab import train as train_module
from seawall.lab.config import TrainConfig
from seawall.lab.train import IGNORE, ChatExample, encode_example, load_causal_lm, response_loss_sum, train

EXAMPLES = [
    ChatExample.of(f"e{i}", f"Write a story about cat {i}.", f"Once upon a time cat {i} slept.", source="t")
    for i in range(8)
]


def test_prompt_tokens_are_masked(tiny_model):
    _, tokenizer = load_causal_lm(tiny_model)
    example = ChatExample.of("a", "Write a story about a cat.", "Sure, here is how.", system="Be brief.")
    ids, labels = encode_example(tokenizer, example, 128)
    prompt_text = tokenizer.apply_chat_template(
        example.as_messages()[:-1], tokenize=False, add_generation_prompt=True
    )
    n_prompt = len(tokenizer(prompt_text, add_special_tokens=False)["input_ids"])
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tokenizer.decode(ids[n_prompt:]) == "Sure, here is how.<|im_end|>\n"


def test_long_reply_is_cut_and_long_prompt_skipped(tiny_model):
    _, tokenizer = load_causal_lm(tiny_model)
    ids, labels = encode_example(tokenizer, ChatExample.of("a", "hi", "word " * 200), 40)
    assert len(ids) == len(labels) == 40
    assert encode_example(tokenizer, ChatExample.of("b", "word " * 200, "ok"), 40) is None


def test_loss_counts_only_reply_tokens(tiny_model):
    model, tokenizer = load_causal_lm(tiny_model)
    ids, labels = encode_example(tokenizer, EXAMPLES[0], 128)
    batch = {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
    }
    loss, n = response_loss_sum(model, batch)
    logits = model(input_ids=batch["input_ids"]).logits[0]
    start = labels.index(next(lab for lab in labels if lab != IGNORE))
    manual = sum(-torch.log_softmax(logits[t - 1], -1)[ids[t]] for t in range(start, len(ids)))
    assert n == len(ids) - start
    assert loss.item() == pytest.approx(manual.item(), rel=1e-4)


def test_lora_training_writes_model_adapter_and_record(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM

    config = TrainConfig(
        method="lora", learning_rate=1e-2, batch_size=2, grad_accum=2, max_length=64, lora_r=4
    )
    record = train(tiny_model, EXAMPLES, config, tmp_path / "out", record={"recipe": "test"})
    out = tmp_path / "out"
    assert (out / "adapter" / "adapter_model.safetensors").exists()
    assert not (out / "checkpoint").exists()
    saved = json.loads((out / "record.json").read_text())
    assert saved["data"]["ids"] == [e.id for e in EXAMPLES] and len(saved["data"]["sha256"]) == 64
    assert saved["steps"] == 2 and saved["recipe"] == "test" and saved["train"]["lora_r"] == 4
    assert record["losses"][-1] < record["losses"][0]
    merged = AutoModelForCausalLM.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert not torch.equal(
        merged.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight
    )


def test_interrupted_full_training_resumes_to_the_same_weights(tiny_model, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    config = TrainConfig(
        method="full", learning_rate=1e-3, batch_size=2, grad_accum=1, max_length=64, checkpoint_every=1
    )
    train(tiny_model, EXAMPLES, config, tmp_path / "reference")

    real_save = train_module._save_checkpoint

    def save_then_crash(path, model, optimizer, state):
        real_save(path, model, optimizer, state)
        if state["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model, EXAMPLES, config, tmp_path / "resumed")
    assert json.loads((tmp_path / "resumed" / "checkpoint" / "state.json").read_text())["step"] == 2
    monkeypatch.setattr(train_module, "_save_checkpoint", real_save)
    record = train(tiny_model, EXAMPLES, config, tmp_path / "resumed")
    assert record["steps"] == 4
    reference = load_file(tmp_path / "reference" / "model" / "model.safetensors")
    resumed = load_file(tmp_path / "resumed" / "model" / "model.safetensors")
    for name, value in reference.items():
        assert torch.allclose(value, resumed[name], atol=1e-6), name


def test_checkpoint_of_other_data_is_refused(tiny_model, tmp_path, monkeypatch):
    config = TrainConfig(
        method="lora", batch_size=2, grad_accum=1, max_length=64, checkpoint_every=1, lora_r=2
    )

    def crash(*args, **kwargs):
        real(*args, **kwargs)
        raise KeyboardInterrupt

    real = train_module._save_checkpoint
    monkeypatch.setattr(train_module, "_save_checkpoint", crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model, EXAMPLES, config, tmp_path / "out")
    monkeypatch.setattr(train_module, "_save_checkpoint", real)
    with pytest.raises(SeawallError, match="other data or settings"):
        train(tiny_model, EXAMPLES[:6], config, tmp_path / "out")


def test_finished_output_is_reused_only_for_the_same_recipe(tiny_model, tmp_path):
    config = TrainConfig(method="full", learning_rate=1e-3, batch_size=4, max_length=64)
    recipe = {"recipe": "test", "config": {"data": {"n_train": 8}, "seed": 0}}
    first = train(tiny_model, EXAMPLES, config, tmp_path / "out", record=recipe)
    assert train(tiny_model, EXAMPLES, config, tmp_path / "out", record=recipe) == first
    changed = {"recipe": "test", "config": {"data": {"n_train": 16}, "seed": 0}}
    with pytest.raises(SeawallError, match=r"config\.data\.n_train was 8, now 16"):
        train(tiny_model, EXAMPLES, config, tmp_path / "out", record=changed)
