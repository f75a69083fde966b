"""Tiny random Llama checkpoints built on the fly for the gene layer's tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

VOCAB = 300


def tiny_config(**overrides):
    """A 4-layer, hidden-64 Llama config."""
    from transformers import LlamaConfig

    params = dict(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=VOCAB,
        max_position_embeddings=128,
        tie_word_embeddings=False,
    )
    params.update(overrides)
    return LlamaConfig(**params)


def build_model(seed: int, base=None, scale: float = 0.02, **overrides):
    """A tiny Llama with random weights; with `base`, a copy of base whose linear weights are nudged by `scale`."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_config(**overrides)).eval()
    if base is not None:
        model.load_state_dict(base.state_dict())
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name.endswith("proj.weight"):
                    param.add_(scale * torch.randn_like(param))
    return model


def save(model, folder: Path, max_shard_size: str | None = None) -> Path:
    """save_pretrained as safetensors, optionally sharded."""
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(folder, **kwargs)
    return folder


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
