"""Tiny random Llama checkpoints built on the fly for the gene layer's tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from seawall.gene.tiny import BENIGN, HARMFUL, TINY_VOCAB, build_tiny_llama, tiny_llama_config


@pytest.fixture(autouse=True)
def _one_thread():
    """One torch thread inside this folder's tests, restored afterwards (other layers keep their setting).

    Tiny models gain nothing from two threads, and OpenMP threads spin badly on a shared, overloaded CPU
    (a 24-token generation measured 32 s with 2 threads vs 0.4 s with 1 at load 14 on 2 cores).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


VOCAB = TINY_VOCAB
tiny_config = tiny_llama_config
build_model = build_tiny_llama


def tiny_tokenizer():
    """A byte-level tokenizer (256 byte symbols + 3 specials) that fits the tiny vocabulary, no chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {ch: i for i, ch in enumerate(alphabet)}
    for special in ("<s>", "</s>", "<pad>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def save(model, folder: Path, max_shard_size: str | None = None) -> Path:
    """save_pretrained as safetensors (optionally sharded) with the tiny tokenizer beside it."""
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.generation_config.pad_token_id = 258
    model.save_pretrained(folder, **kwargs)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def shots():
    """A tiny inline few-shot set."""
    from seawall.gene.shots import Shots

    return Shots.from_lists(HARMFUL, BENIGN)


@pytest.fixture(scope="session")
def trio(tmp_path_factory):
    """Aligned A, degraded D (A nudged), and target T (A nudged differently), saved to folders; D is sharded."""
    root = tmp_path_factory.mktemp("trio")
    aligned = build_model(0)
    degraded = build_model(1, base=aligned, scale=0.02)
    target = build_model(2, base=aligned, scale=0.01)
    return {
        "A": save(aligned, root / "A"),
        "D": save(degraded, root / "D", max_shard_size="100KB"),
        "T": save(target, root / "T"),
        "models": {"A": aligned, "D": degraded, "T": target},
    }


@pytest.fixture(scope="session")
def tiny():
    """Helpers to build and save more tiny models inside a test."""
    import types

    return types.SimpleNamespace(build=build_model, save=save, tokenizer=tiny_tokenizer, config=tiny_config)
