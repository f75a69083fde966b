"""Model loading, prompt batching, greedy answers and the losses shared by select, calibrate and distill."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from seawall.errors import ModelError


def resolve(ref: str | Path) -> Path:
    """A local model folder for a reference (paths only here; packaged names go through seawall.models)."""
    path = Path(ref)
    if path.exists():
        return path
    try:
        from seawall.models import resolve_model  # provided by the models layer when merged
    except ImportError:
        raise ModelError(f"{ref}: no such model folder") from None
    return Path(resolve_model(str(ref)))


def load_causal_lm(ref: str | Path | torch.nn.Module, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """Load a causal LM for CPU/GPU work (eval mode, no grads); a PEFT folder is merged into its base model.

    Plain folders go through `seawall.models.load_causal_lm` (safetensors only, library noise at debug level)."""
    if isinstance(ref, torch.nn.Module):
        return ref
    from seawall.models import load_causal_lm as load_plain
    from seawall.models.load import quiet_transformers

    path = resolve(ref)
    adapter_config = path / "adapter_config.json"
    if adapter_config.is_file() and not (path / "config.json").is_file():
        from peft import PeftModel

        base_ref = json.loads(adapter_config.read_text()).get("base_model_name_or_path")
        if not base_ref:
            raise ModelError(f"{path}: PEFT adapter without base_model_name_or_path; pass the base model")
        if not (path / "adapter_model.safetensors").is_file():
            raise ModelError(f"{path}: no adapter_model.safetensors (only safetensors adapters are loaded)")
        base = load_causal_lm(base_ref, dtype)
        with quiet_transformers():
            model = PeftModel.from_pretrained(base, str(path)).merge_and_unload()
    else:
        try:
            model = load_plain(path, dtype)
        except OSError as error:
            raise ModelError(f"{path}: cannot load a causal LM from safetensors ({error})") from error
    model.eval()
    model.requires_grad_(False)
    return model


def load_tokenizer(ref: str | Path) -> Any:
    """The model folder's tokenizer, with a pad token (EOS when none is defined)."""
    from transformers import AutoTokenizer

    path = resolve(ref)
    adapter_config = path / "adapter_config.json"
    if not any(path.glob("tokenizer*")) and adapter_config.is_file():
        path = resolve(json.loads(adapter_config.read_text())["base_model_name_or_path"])
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def prompt_ids(tokenizer: Any, prompt: str, max_tokens: int | None = None) -> list[int]:
    """Token ids of a user turn ready for the answer (chat template when the tokenizer has one).

    With `max_tokens`, only the last max_tokens ids are kept, so the end of the turn (where the answer starts)
    survives truncation of very long prompts.
    """
    if getattr(tokenizer, "chat_template", None):
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=True
        )
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        ids = list(ids)
    else:
        ids = tokenizer(prompt + "\n", add_special_tokens=True)["input_ids"]
    return ids[-max_tokens:] if max_tokens else ids


def build_batch(
    tokenizer: Any, prompts: Sequence[list[int]], targets: Sequence[list[int]], max_length: int
) -> dict[str, torch.Tensor]:
    """Right-padded batch of prompt+target ids; labels are the target ids (-100 on prompt and padding)."""
    rows, labels = [], []
    for p, t in zip(prompts, targets, strict=True):
        seq = (list(p) + list(t))[-max_length:]
        lab = ([-100] * len(p) + list(t))[-max_length:]
        rows.append(seq)
        labels.append(lab)
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    label_t = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (r, lab) in enumerate(zip(rows, labels, strict=True)):
        input_ids[i, : len(r)] = torch.tensor(r)
        attention[i, : len(r)] = 1
        label_t[i, : len(lab)] = torch.tensor(lab)
    return {"input_ids": input_ids, "attention_mask": attention, "labels": label_t}


def target_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of an answer text followed by EOS."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


@torch.no_grad()
def greedy_answers(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[list[int]], n_tokens: int, batch_size: int = 8
) -> list[list[int]]:
    """The model's own greedy continuation (n_tokens, cut after EOS) of each tokenised prompt."""
    pad = tokenizer.pad_token_id
    out: list[list[int]] = []
    for start in range(0, len(prompts), batch_size):
        chunk = prompts[start : start + batch_size]
        width = max(len(p) for p in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(chunk):  # left padding, so every row continues at the same position
            ids[i, width - len(p) :] = torch.tensor(p)
            mask[i, width - len(p) :] = 1
        generated = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=n_tokens,
            do_sample=False,
            pad_token_id=pad,
        )[:, width:]
        for row in generated.tolist():
            if tokenizer.eos_token_id in row:
                row = row[: row.index(tokenizer.eos_token_id) + 1]
            out.append(row)
    return out


def shifted(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits at the positions that predict a labelled token, those tokens)."""
    logits = logits[:, :-1]
    labels = labels[:, 1:]
    keep = labels != -100
    return logits[keep], labels[keep]


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over labelled target tokens."""
    flat_logits, flat_labels = shifted(logits, labels)
    return F.cross_entropy(flat_logits.float(), flat_labels)


def kl_to_reference(logits: torch.Tensor, labels: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """Mean KL(reference ‖ model) over labelled positions; ref_logprobs were taken at the same positions."""
    flat_logits, _ = shifted(logits, labels)
    logprobs = F.log_softmax(flat_logits.float(), dim=-1)
    return F.kl_div(logprobs, ref_logprobs, log_target=True, reduction="batchmean")


@torch.no_grad()
def reference_logprobs(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Log-probabilities of a (frozen) model at a batch's labelled positions."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    flat_logits, _ = shifted(logits, batch["labels"])
    return F.log_softmax(flat_logits.float(), dim=-1)


def linear_weight_shapes(model: torch.nn.Module) -> dict[str, list[int]]:
    """{parameter name: shape} of a loaded model (checkpoint naming)."""
    return {name: list(p.shape) for name, p in model.named_parameters()}
