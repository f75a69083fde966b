"""Thin loaders on top of `resolve_model`: weights always from safetensors, remote code never trusted."""

from __future__ import annotations

import os
from typing import Any

from seawall.errors import ModelError
from seawall.models.quiet import quiet_transformers
from seawall.models.resolve import resolve_model

_DTYPES = ("float32", "bfloat16", "float16")
# transformers maps these to *LMHeadModel classes, but without is_decoder they are bidirectional encoders:
# generation from them is meaningless, so a causal-LM caller gets an error instead of noise.
_ENCODER_TYPES = {
    "bert",
    "roberta",
    "xlm-roberta",
    "distilbert",
    "albert",
    "electra",
    "mpnet",
    "deberta",
    "deberta-v2",
}


def _torch_dtype(dtype: Any) -> Any:
    import torch

    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise ModelError(f"unknown dtype {dtype!r}; use one of {', '.join(_DTYPES)}")
    return getattr(torch, dtype)


def load_tokenizer(ref: str | os.PathLike, cache_dir: str | os.PathLike | None = None, **kwargs: Any) -> Any:
    """The tokenizer of a model reference; causal LMs without a pad token get pad = eos for batching."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model(ref, cache_dir), trust_remote_code=False, **kwargs
    )
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(
    ref: str | os.PathLike,
    dtype: Any = "float32",
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Any:
    """A causal LM in eval mode, loaded from safetensors."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = resolve_model(ref, cache_dir)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=False)
    if config.model_type in _ENCODER_TYPES and not getattr(config, "is_decoder", False):
        raise ModelError(
            f"{folder} is an encoder ({config.model_type}), not a causal LM; use it as a detector encoder "
            "(load_encoder_for_classification) or pass a causal LM such as smollm2-135m-instruct"
        )
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(
                folder, dtype=_torch_dtype(dtype), use_safetensors=True, trust_remote_code=False, **kwargs
            )
    except ValueError as error:
        raise ModelError(f"{folder} does not hold a causal LM transformers can load: {error}") from error
    return model.eval()


def load_encoder_for_classification(
    ref: str | os.PathLike,
    num_labels: int = 2,
    dtype: Any = "float32",
    cache_dir: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Any:
    """An encoder with a fresh (or stored) sequence-classification head with `num_labels` outputs."""
    from transformers import AutoModelForSequenceClassification

    folder = resolve_model(ref, cache_dir)
    try:
        with quiet_transformers():
            model = AutoModelForSequenceClassification.from_pretrained(
                folder,
                num_labels=num_labels,
                dtype=_torch_dtype(dtype),
                use_safetensors=True,
                trust_remote_code=False,
                **kwargs,
            )
    except ValueError as error:
        raise ModelError(f"{folder} does not hold a model with a classification head: {error}") from error
    return model
