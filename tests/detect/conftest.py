"""Fixtures for detector tests: real SecureBreak splits and tiny random BERT / Llama models built on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seawall.data import canonical_split

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"]


@pytest.fixture(scope="session")
def sb_split():
    """The canonical SecureBreak split (real shared data)."""
    return canonical_split("securebreak")


def _tokenizer(texts: list[str], vocab_size: int = 300):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIALS)
    tok.train_from_iterator([*texts, *["safe unsafe"] * 500], trainer)
    return tok


@pytest.fixture(scope="session")
def tiny_texts(sb_split) -> list[str]:
    return [r.prompt + " " + r.response for r in sb_split["train"][:400]]


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tiny_texts) -> Path:
    """A 2-layer random BERT with a word-level tokenizer, saved as an HF folder."""
    from transformers import PreTrainedTokenizerFast

    from seawall.detect.tiny import save_tiny_bert

    tok = PreTrainedTokenizerFast(
        tokenizer_object=_tokenizer(tiny_texts),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    return save_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), tok)


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory, tiny_texts) -> Path:
    """A 2-layer random Llama with a word-level tokenizer and a minimal chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    raw = _tokenizer(tiny_texts)
    tok = PreTrainedTokenizerFast(
        tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", bos_token="<s>", eos_token="</s>"
    )
    tok.chat_template = (
        "{% for m in messages %}<s> {{ m['role'] }} : {{ m['content'] }} </s>{% endfor %}"
        "{% if add_generation_prompt %}<s> assistant :{% endif %}"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=raw.get_vocab_size(),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        max_position_embeddings=1024,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """One CPU thread per test module: on a shared 2-core machine two threads mostly wait on each other."""
    import torch

    from seawall.detect._torch import THREADS_ENV

    before_env, before_threads = os.environ.get(THREADS_ENV), torch.get_num_threads()
    os.environ[THREADS_ENV] = "1"
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before_threads)
    if before_env is None:
        os.environ.pop(THREADS_ENV, None)
    else:
        os.environ[THREADS_ENV] = before_env


@pytest.fixture(scope="session")
def balanced():
    """`balanced(records, n)`: the first n/2 unsafe and n/2 safe rows with a non-empty response."""

    def pick(records, n):
        rows = [r for r in records if r.response.strip()]
        return [r for r in rows if r.y == 1][: n // 2] + [r for r in rows if r.y == 0][: n // 2]

    return pick
