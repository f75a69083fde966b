"""A small, resumable supervised fine-tuning loop for chat models: loss on the response tokens only.

With `precision` auto (bf16 CPUs) or bfloat16, the forward passes run under bf16 autocast while the weights, the
gradients and the optimizer state stay fp32; the run record names the precision used. The precision is not part
of a run's identity: a checkpoint resumes, and a finished output is reused, whatever the precision.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from seawall.errors import SeawallError
from seawall.io import atomic_dir, atomic_write_json
from seawall.lab.config import TrainConfig
from seawall.models.load import quiet_transformers
from seawall.models.precision import autocast, resolve_precision

IGNORE = -100
Messages = list[dict[str, str]]


@dataclass(frozen=True)
class ChatExample:
    """One training conversation; the last message is the assistant turn the loss is computed on."""

    id: str
    messages: tuple[tuple[str, str], ...]
    source: str = ""

    @classmethod
    def of(
        cls, id: str, prompt: str, response: str, source: str = "", system: str | None = None
    ) -> ChatExample:
        """A single-turn example (optional system message)."""
        turns = ((("system", system),) if system else ()) + (("user", prompt), ("assistant", response))
        return cls(id=id, messages=turns, source=source)

    @property
    def prompt(self) -> str:
        """The last user message (what hygiene checks compare with evaluation prompts)."""
        return next(text for role, text in reversed(self.messages) if role == "user")

    def as_messages(self) -> Messages:
        return [{"role": role, "content": text} for role, text in self.messages]

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.messages, ensure_ascii=False).encode()).hexdigest()


def encode_example(
    tokenizer: Any, example: ChatExample, max_length: int
) -> tuple[list[int], list[int]] | None:
    """Token ids and labels; prompt tokens (everything before the assistant reply) get label -100.

    The prompt and the reply are tokenized separately and concatenated so the mask boundary is exact.
    Returns None when the prompt alone leaves no room for a reply.
    """
    messages = example.as_messages()
    if messages[-1]["role"] != "assistant":
        raise SeawallError(f"example {example.id}: the last message must be the assistant's reply")
    prompt_text = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    full_text = tokenizer.apply_chat_template(messages, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise SeawallError(
            f"example {example.id}: the chat template does not render the prompt as a prefix of the conversation"
        )
    prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    if len(prompt_ids) >= max_length - 1 or not reply_ids:
        return None
    reply_ids = reply_ids[: max_length - len(prompt_ids)]
    return prompt_ids + reply_ids, [IGNORE] * len(prompt_ids) + reply_ids


def data_manifest(examples: Sequence[ChatExample]) -> dict[str, Any]:
    """Ids, sources and hashes of the training data, for the run record."""
    digest = hashlib.sha256()
    sources: dict[str, int] = {}
    for example in examples:
        digest.update(example.sha256().encode())
        sources[example.source] = sources.get(example.source, 0) + 1
    return {
        "n": len(examples),
        "sha256": digest.hexdigest(),
        "sources": sources,
        "ids": [example.id for example in examples],
    }


def _batches(n_items: int, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    order = list(range(n_items))
    random.Random(f"{seed}:{epoch}").shuffle(order)
    return [order[i : i + batch_size] for i in range(0, n_items, batch_size)]


def _collate(encoded: list[tuple[list[int], list[int]]], pad_id: int) -> dict[str, Any]:
    import torch

    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": mask}


def response_loss_sum(model: Any, batch: dict[str, Any]) -> tuple[Any, int]:
    """Summed next-token cross-entropy over the labelled (reply) tokens, and how many there were."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shift_logits = logits[:, :-1, :].reshape(-1, logits.shape[-1]).float()
    shift_labels = batch["labels"][:, 1:].reshape(-1)
    loss = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE, reduction="sum")
    return loss, int((shift_labels != IGNORE).sum())


def _trainable(model: Any) -> dict[str, Any]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def optimizer_step(
    model: Any, micro: Sequence[dict[str, Any]], optimizer: Any, scheduler: Any | None, precision: str
) -> float:
    """One optimizer step of `train` over the micro-batches `micro` (gradient accumulation): each forward pass under
    autocast (`precision`), the loss normalised by the reply tokens of all of them, the gradient norm clipped at
    1.0, the optimizer and then `scheduler` stepped (None: a constant learning rate, as bench/train_step.py times
    it); returns the loss per reply token."""
    import torch

    n_tokens = sum(int((b["labels"][:, 1:] != IGNORE).sum()) for b in micro)
    total = 0.0
    for batch in micro:
        with autocast(precision):
            loss_sum, _ = response_loss_sum(model, batch)
        (loss_sum / max(1, n_tokens)).backward()
        total += loss_sum.item()
    torch.nn.utils.clip_grad_norm_(list(_trainable(model).values()), 1.0)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return total / max(1, n_tokens)


def _save_checkpoint(path: Path, model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    import torch
    from safetensors.torch import save_file

    with atomic_dir(path, overwrite=True) as tmp:
        save_file(
            {k: v.detach().contiguous() for k, v in _trainable(model).items()},
            str(tmp / "trainable.safetensors"),
        )
        opt = optimizer.state_dict()
        flat = {
            f"{index}.{key}": (value if value.dim() else value.reshape(1)).contiguous()
            for index, slot in opt["state"].items()
            for key, value in slot.items()
            if torch.is_tensor(value)
        }
        flat["rng"] = torch.get_rng_state()
        save_file(flat, str(tmp / "optimizer.safetensors"))
        atomic_write_json(tmp / "state.json", {**state, "param_groups": opt["param_groups"]})


def _load_checkpoint(path: Path, model: Any, optimizer: Any) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    state = json.loads((path / "state.json").read_text())
    params = _trainable(model)
    saved = load_file(str(path / "trainable.safetensors"))
    if set(saved) != set(params):
        raise SeawallError(f"checkpoint {path} does not match this model's trainable parameters; delete it")
    with torch.no_grad():
        for name, value in saved.items():
            params[name].copy_(value)
    flat = load_file(str(path / "optimizer.safetensors"))
    torch.set_rng_state(flat.pop("rng"))
    slots: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        slots.setdefault(int(index), {})[name] = value.reshape(()) if name == "step" else value
    optimizer.load_state_dict({"state": slots, "param_groups": state["param_groups"]})
    return state


def load_causal_lm(
    model_dir: str | Path, threads: int = 2, require_chat_template: bool = True
) -> tuple[Any, Any]:
    """Load a float32 causal LM and its tokenizer from a local folder (no remote code, no hub); a tokenizer without
    a chat template is an error unless `require_chat_template` is False (a base model about to be given one)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if require_chat_template and not getattr(tokenizer, "chat_template", None):
        raise SeawallError(
            f"model {model_dir} has no chat template; the lab recipes train chat models (make a base model one "
            "with `seawall lab instruct`)"
        )
    try:
        with quiet_transformers():
            model = AutoModelForCausalLM.from_pretrained(
                str(model_dir), dtype=torch.float32, use_safetensors=True, trust_remote_code=False
            )
    except (OSError, ValueError) as error:
        raise SeawallError(f"cannot load a causal LM from {model_dir}: {error}") from None
    return model, tokenizer


def with_lora(model: Any, config: TrainConfig, model_dir: str | Path) -> tuple[Any, list[str]]:
    """`model` wrapped with PEFT LoRA adapters (`config`'s rank, alpha and dropout) on those of `config.lora_targets`
    it has, and those targets; a model with none of them (loaded from `model_dir`) is an error."""
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    targets = [t for t in config.lora_targets if t in present]
    if not targets:
        raise SeawallError(f"none of the LoRA targets {config.lora_targets} exist in {model_dir}")
    # PEFT reads transformers' deprecated `is_gradient_checkpointing` (a FutureWarning on every run): debug log.
    with quiet_transformers():
        model = get_peft_model(
            model,
            LoraConfig(
                r=config.lora_r,
                lora_alpha=config.lora_alpha,
                lora_dropout=config.lora_dropout,
                target_modules=targets,
                task_type="CAUSAL_LM",
            ),
        )
    return model, targets


def _recipe_identity(config: Any) -> Any:
    """A recipe as compared with a finished run's: without `train.precision`, which changes speed, not the recipe."""
    if isinstance(config, dict) and isinstance(config.get("train"), dict):
        return {**config, "train": {k: v for k, v in config["train"].items() if k != "precision"}}
    return config


def _first_difference(old: Any, new: Any, path: str = "config") -> str:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                return _first_difference(old.get(key), new.get(key), f"{path}.{key}")
    return f"{path} was {old!r}, now {new!r}"


def train(
    model_dir: str | Path,
    examples: Sequence[ChatExample],
    config: TrainConfig,
    output: str | Path,
    record: dict[str, Any] | None = None,
    chat_template: str | None = None,
) -> dict[str, Any]:
    """Fine-tune the model in `model_dir` on `examples`, writing OUTPUT/model (and OUTPUT/adapter for LoRA).

    OUTPUT/checkpoint holds the resumable state while training runs; OUTPUT/record.json is written last, so
    its presence marks a finished run. Re-running with the same data and config resumes from the checkpoint.
    With `chat_template` (a `seawall.lab.templates` choice: `auto` keeps a tokenizer's own), the tokenizer is given
    the template it selects before the examples are encoded, and OUTPUT/model carries it and its stop token.
    """
    import torch

    output = Path(output)
    if (output / "record.json").exists():
        finished = json.loads((output / "record.json").read_text())
        wanted = _recipe_identity((record or {}).get("config"))
        done = _recipe_identity(finished.get("config"))
        if wanted is not None and done != wanted:
            raise SeawallError(
                f"{output} holds a model trained with another recipe (first difference: "
                f"{_first_difference(done, wanted)}); pick another output folder or delete it"
            )
        return finished
    if not examples:
        raise SeawallError("no training examples; check the data options of the recipe")
    started = time.time()
    precision = resolve_precision(config.precision, "train.precision")
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    model, tokenizer = load_causal_lm(model_dir, config.threads, require_chat_template=chat_template is None)
    template_record: dict[str, Any] = {}
    if chat_template is not None:
        from seawall.lab.templates import give_chat_template

        template_record["chat_template"] = give_chat_template(tokenizer, model, chat_template)
    if config.method == "lora":
        model, _ = with_lora(model, config, model_dir)
    model.train()

    encoded, skipped = [], []
    for example in examples:
        item = encode_example(tokenizer, example, config.max_length)
        (encoded.append(item) if item else skipped.append(example.id))
    if not encoded:
        raise SeawallError(f"every example is longer than max_length={config.max_length} tokens")

    micro_per_epoch = math.ceil(len(encoded) / config.batch_size)
    steps_per_epoch = math.ceil(micro_per_epoch / config.grad_accum)
    total_steps = steps_per_epoch * config.epochs
    if config.max_steps:
        total_steps = min(total_steps, config.max_steps)
    warmup = int(config.warmup_ratio * total_steps)
    optimizer = torch.optim.AdamW(
        list(_trainable(model).values()), lr=config.learning_rate, weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: (
            (s + 1) / (warmup + 1)
            if s < warmup
            else max(0.0, (total_steps - s) / max(1, total_steps - warmup))
        ),
    )
    manifest = data_manifest(examples)
    # A given template changes every encoded example: a checkpoint trained with another one must not resume.
    given_template = tokenizer.chat_template if chat_template is not None else ""
    fingerprint = hashlib.sha256(
        (
            manifest["sha256"]
            + config.model_dump_json(exclude={"precision"})
            + str(model_dir)
            + given_template
        ).encode()
    ).hexdigest()
    checkpoint = output / "checkpoint"
    step, losses, elapsed_before = 0, [], 0.0
    if (checkpoint / "state.json").exists():
        state = json.loads((checkpoint / "state.json").read_text())
        if state.get("fingerprint") != fingerprint:
            raise SeawallError(
                f"{checkpoint} was written for other data or settings; delete {output} or pick a new output"
            )
        state = _load_checkpoint(checkpoint, model, optimizer)
        step, losses, elapsed_before = state["step"], state["losses"], state["elapsed_s"]
        scheduler.last_epoch = step
        for group in optimizer.param_groups:
            group["lr"] = config.learning_rate * scheduler.lr_lambdas[0](step)

    plan = [
        batch
        for epoch in range(config.epochs)
        for batch in _batches(len(encoded), config.batch_size, config.seed, epoch)
    ]
    groups = [plan[i : i + config.grad_accum] for i in range(0, len(plan), config.grad_accum)][:total_steps]
    pad_id = tokenizer.pad_token_id
    bar = tqdm(total=total_steps, initial=step, desc=f"train {output.name}", unit="step")
    for index in range(step, total_steps):
        micro = [_collate([encoded[i] for i in batch], pad_id) for batch in groups[index]]
        losses.append(round(optimizer_step(model, micro, optimizer, scheduler, precision), 5))
        bar.update(1)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        done = index + 1
        if done % config.checkpoint_every == 0 and done < total_steps:
            _save_checkpoint(
                checkpoint,
                model,
                optimizer,
                {
                    "step": done,
                    "losses": losses,
                    "fingerprint": fingerprint,
                    "elapsed_s": elapsed_before + time.time() - started,
                },
            )
    bar.close()

    model.eval()
    with atomic_dir(output / "model", overwrite=True) as tmp, quiet_transformers():
        if config.method == "lora":
            model.save_pretrained(str(output / ".adapter.tmp"))
            merged = model.merge_and_unload()
            merged.save_pretrained(str(tmp))
        else:
            model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
    if config.method == "lora":
        import shutil

        shutil.rmtree(output / "adapter", ignore_errors=True)
        (output / ".adapter.tmp").rename(output / "adapter")
    result = {
        **(record or {}),
        "base_model": str(model_dir),
        **template_record,
        "train": config.model_dump(mode="json"),
        "data": manifest,
        "skipped_too_long": skipped,
        "steps": total_steps,
        "precision": precision,
        "losses": losses,
        "train_time_s": round(elapsed_before + time.time() - started, 1),
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__},
    }
    atomic_write_json(output / "record.json", result)
    import shutil

    shutil.rmtree(checkpoint, ignore_errors=True)
    return result
