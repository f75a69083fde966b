"""A tiny random BERT for tests of the encoder backends and the training-step bench."""

from __future__ import annotations

from pathlib import Path


def save_tiny_bert(folder: str | Path, tokenizer: object, seed: int = 0) -> Path:
    """Save a random 2-layer BERT (hidden size 32, no head) sized for `tokenizer`, and the tokenizer, to `folder`;
    returns it. A sequence-classification load gives it a fresh head, as the encoder backend does a base model."""
    import torch
    from transformers import BertConfig, BertModel

    folder = Path(folder)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
