"""A tiny random chat model (byte-level tokenizer with a chat template + small Llama) for tests and smoke runs."""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<|pad|>", "<|im_start|>", "<|im_end|>"]


def byte_level_tokenizer(specials: list[str], pad: str, bos: str, eos: str) -> object:
    """A byte-level tokenizer: `specials` first, then the 256 byte tokens, no merges (every text encodes)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token=pad, bos_token=bos, eos_token=eos)


def save_tiny_llama(folder: str | Path, tokenizer: object, seed: int = 0) -> Path:
    """Save a random 4-layer Llama sized for `tokenizer`, and the tokenizer, to `folder`; returns it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    torch.manual_seed(seed)
    config = LlamaConfig(
        hidden_size=64,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=128,
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = LlamaForCausalLM(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_tokenizer() -> object:
    """A byte-level tokenizer (256 byte tokens + 3 specials, no merges) with a ChatML chat template."""
    tokenizer = byte_level_tokenizer(SPECIAL_TOKENS, pad="<|pad|>", bos="<|im_start|>", eos="<|im_end|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_tiny_chat_model(folder: str | Path, seed: int = 0) -> Path:
    """Save a random 4-layer Llama and its tokenizer to `folder` (loads with AutoModelForCausalLM); returns it."""
    return save_tiny_llama(folder, build_tiny_tokenizer(), seed)
