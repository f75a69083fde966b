"""Helpers shared by the torch backends: model resolution, seeding, truncation, batching, checkpoints."""

from __future__ import annotations

import json
import os
import random
import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seawall.errors import ModelError
from seawall.io import atomic_dir, atomic_write_bytes, atomic_write_json

# Characters kept from each end of a text before tokenising: bounds the cost of a 100,000-character response while
# leaving far more than max_length tokens for the token-level head/tail cut below.
CHAR_HEAD = 6000
CHAR_TAIL = 3000


THREADS_ENV = "SEAWALL_NUM_THREADS"


def thread_count(num_threads: int | None) -> int | None:
    """The CPU threads to use: $SEAWALL_NUM_THREADS when set (a shared machine or a test run), else `num_threads`."""
    override = os.environ.get(THREADS_ENV, "").strip()
    return int(override) if override.isdigit() and int(override) > 0 else num_threads


def setup_torch(num_threads: int | None) -> None:
    """Cap torch's CPU threads (the machines are shared) — once, before any work."""
    import torch

    num_threads = thread_count(num_threads)
    if num_threads and torch.get_num_threads() != num_threads:
        torch.set_num_threads(num_threads)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch."""
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_model_path(ref: str) -> Path:
    """A local HF folder as is; otherwise a name resolved by `seawall.models.resolve_model` (packaged defaults)."""
    path = Path(ref).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: not a Hugging Face model folder")
        return path
    try:
        from seawall.models import resolve_model
    except ImportError:
        raise ModelError(
            f"model {ref!r} is not a local folder and seawall.models is not available to resolve it; "
            "pass the path of a Hugging Face model folder"
        ) from None
    return Path(resolve_model(ref))


def clip_chars(text: str) -> str:
    """Keep the first CHAR_HEAD and last CHAR_TAIL characters of a very long text."""
    if len(text) <= CHAR_HEAD + CHAR_TAIL:
        return text
    return text[:CHAR_HEAD] + " … " + text[-CHAR_TAIL:]


def head_tail(ids: list[int], budget: int, head_fraction: float) -> list[int]:
    """Keep `budget` tokens: the first ⌈head_fraction·budget⌉ and the rest from the end."""
    if len(ids) <= budget:
        return ids
    if budget <= 0:
        return []
    head = min(budget, max(1, round(budget * head_fraction)))
    tail = budget - head
    return ids[:head] + (ids[len(ids) - tail :] if tail else [])


PAD_SLACK_FRACTION = 0.2
PAD_SLACK_TOKENS = 8


def length_sorted_batches(
    lengths: Sequence[int], batch_size: int, split_gaps: bool = False
) -> Iterator[np.ndarray]:
    """Index batches of similar length (longest first), so dynamic padding wastes little compute.

    With `split_gaps`, a batch is also closed early when the next sequence is shorter than its longest one by more
    than max(PAD_SLACK_TOKENS, PAD_SLACK_FRACTION·width). That pays off only where a call is cheap (ONNX Runtime):
    PyTorch eager on an oversubscribed CPU pays a large per-call cost, and measured 3× slower with it at batch 32.
    """
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batch: list[int] = []
    width = 0
    for index in order:
        length = int(lengths[index])
        gap = split_gaps and width - length > max(PAD_SLACK_TOKENS, PAD_SLACK_FRACTION * width)
        if batch and (len(batch) >= batch_size or gap):
            yield np.asarray(batch)
            batch = []
        if not batch:
            width = length
        batch.append(int(index))
    if batch:
        yield np.asarray(batch)


def bucketed_train_batches(
    lengths: Sequence[int], batch_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Shuffled training batches whose members have similar lengths (sorted within chunks of 50 batches)."""
    order = rng.permutation(len(lengths))
    chunk = batch_size * 50
    batches: list[np.ndarray] = []
    for start in range(0, len(order), chunk):
        part = order[start : start + chunk]
        part = part[np.argsort([lengths[i] for i in part], kind="stable")]
        batches.extend(part[i : i + batch_size] for i in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def pad_batch(
    sequences: list[list[int]], pad_id: int, type_ids: list[list[int]] | None = None
) -> dict[str, Any]:
    """Right-pad a batch to its own longest member; returns torch tensors."""
    import torch

    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, s in enumerate(sequences):
        input_ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    batch = {"input_ids": input_ids, "attention_mask": mask}
    if type_ids is not None:
        tt = torch.zeros((len(sequences), width), dtype=torch.long)
        for i, t in enumerate(type_ids):
            tt[i, : len(t)] = torch.tensor(t, dtype=torch.long)
        batch["token_type_ids"] = tt
    return batch


def class_weights(y: np.ndarray, mode: str | None) -> np.ndarray:
    """sklearn's "balanced" weights n / (2 · n_c), or ones."""
    if mode is None or mode == "none":
        return np.ones(2)
    if mode != "balanced":
        raise ModelError(f"class_weight must be 'balanced' or None, got {mode!r}")
    counts = np.bincount(y, minlength=2).astype(np.float64)
    return len(y) / (2.0 * np.maximum(counts, 1.0))


# ---- resumable checkpoints (safetensors + JSON; written atomically) ----------------------------------------------
def _best_path(folder: Path, step: int) -> Path:
    return folder / f"best-step-{step}.safetensors"


def save_checkpoint(
    folder: Path, model: Any, optimizer: Any, meta: dict[str, Any], best: dict[str, Any] | None = None
) -> None:
    """Write model, optimizer and RNG state to folder/step-N atomically, then point folder/latest.json at it.

    `best` (the trainable weights of the best evaluation, found at meta["best_step"]) is written first, atomically,
    to folder/best-step-N.safetensors, so a checkpoint never names a best-weights file that is not complete.
    """
    import torch
    from safetensors.torch import save, save_file

    if best is not None:
        tensors = {n: t.detach().contiguous() for n, t in best.items()}
        atomic_write_bytes(_best_path(folder, meta["best_step"]), save(tensors))
    target = folder / f"step-{meta['step']}"
    with atomic_dir(target, overwrite=True) as tmp:
        trainable = {n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}
        save_file(trainable, str(tmp / "model.safetensors"))
        opt_tensors, opt_meta = _flatten_optimizer(optimizer)
        opt_tensors["rng.torch"] = torch.get_rng_state()
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        atomic_write_json(tmp / "meta.json", {**meta, "optimizer": opt_meta})
    atomic_write_json(folder / "latest.json", {"step": meta["step"], "dir": target.name})
    for old in folder.glob("step-*"):
        if old.name != target.name and old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
    current_best = _best_path(folder, meta.get("best_step", 0)).name
    for old in folder.glob("best-step-*.safetensors"):
        if old.name != current_best:
            old.unlink(missing_ok=True)


def load_best_weights(folder: Path, model: Any, step: int) -> dict[str, Any] | None:
    """The best trainable weights saved with the checkpoints under `folder` for best step `step`, or None when that
    file does not exist (no evaluation yet, or a checkpoint written before best weights were kept)."""
    from safetensors.torch import load_file

    path = _best_path(folder, step)
    if not step or not path.is_file():
        return None
    weights = load_file(str(path))
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in weights]
    if missing:
        raise ModelError(
            f"best weights {path} do not match the model (missing {missing[:3]}…); delete {folder}"
        )
    return weights


def first_difference(old: Any, new: Any, path: str) -> str:
    """The first differing field of two JSON-like values, as "a.b was X, now Y"."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            if old.get(key) != new.get(key):
                return first_difference(old.get(key), new.get(key), f"{path}.{key}")
    return f"{path} was {old!r}, now {new!r}"


def load_checkpoint(
    folder: Path, model: Any, optimizer: Any, fingerprint: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """Restore the latest checkpoint under `folder` into model/optimizer; returns its meta, or None.

    With `fingerprint`, the checkpoint must have been written with the same one (settings and data): otherwise a
    `ModelError` names the first difference, before anything is restored.
    """
    import torch
    from safetensors.torch import load_file

    pointer = folder / "latest.json"
    if not pointer.is_file():
        return None
    latest = json.loads(pointer.read_text())
    target = folder / latest["dir"]
    meta = json.loads((target / "meta.json").read_text())
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        if "fingerprint" not in meta:
            raise ModelError(
                f"checkpoint {target} was written by an older seawall without a fingerprint of its settings and "
                f"data, so it cannot be checked against this run; delete {folder} or set another checkpoint_dir"
            )
        difference = first_difference(meta["fingerprint"], fingerprint, "fingerprint")
        raise ModelError(
            f"checkpoint {target} was written for other settings or data (first difference: {difference}); "
            f"delete {folder} or set another checkpoint_dir"
        )
    weights = load_file(str(target / "model.safetensors"))
    missing = [n for n, p in model.named_parameters() if p.requires_grad and n not in weights]
    if missing:
        raise ModelError(f"checkpoint {target} does not match the model (missing {missing[:3]}…); delete it")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in weights:
                p.copy_(weights[n])
    tensors = load_file(str(target / "optimizer.safetensors"))
    torch.set_rng_state(tensors.pop("rng.torch"))
    _restore_optimizer(optimizer, tensors, meta["optimizer"])
    return meta


def remove_checkpoints(folder: Path) -> None:
    """Delete what `save_checkpoint` wrote under `folder` (and the folder, when nothing else is in it)."""
    for path in folder.glob("step-*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
    for path in [*folder.glob("best-step-*.safetensors"), folder / "latest.json"]:
        path.unlink(missing_ok=True)
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def _flatten_optimizer(optimizer: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    import torch

    state = optimizer.state_dict()
    tensors: dict[str, Any] = {}
    scalars: dict[str, Any] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value.detach().contiguous()
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _restore_optimizer(optimizer: Any, tensors: dict[str, Any], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for name, value in meta["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
