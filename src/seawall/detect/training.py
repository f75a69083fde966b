"""One training loop for the torch backends (encoder fine-tuning and lm-judge LoRA).

A backend provides tokenised examples and a `forward(batch) -> logits (n, 2)`; the loop does class-weighted
cross-entropy, AdamW with linear warm-up/decay, length-bucketed batches, a tqdm bar, evaluation on dev (AUROC) with
early stopping (the best weights are kept, and persisted with the checkpoints so a resumed run restores them too),
and resumable atomic checkpoints. With `precision="bfloat16"` the forward passes run under CPU bf16 autocast while
the weights, gradients and optimizer state stay fp32 (`seawall.models.precision`).

A checkpoint records the fingerprint of its settings and data (`run_fingerprint`): resuming one written for other
settings or data is an error naming the first difference, as in `seawall.lab`, and a run that finishes removes its
checkpoints (the weights are then in the model the caller saves), so an edited config never silently "resumes" a
finished run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from seawall.detect._torch import (
    bucketed_train_batches,
    class_weights,
    length_sorted_batches,
    load_best_weights,
    load_checkpoint,
    pad_batch,
    remove_checkpoints,
    save_checkpoint,
)
from seawall.models.precision import autocast, resolve_precision

log = logging.getLogger("seawall.detect")

# Scoring this many rows or more shows a progress bar (small calls, e.g. a guard's, stay silent).
PROGRESS_MIN_ROWS = 512

# Backend hyper-parameters that do not change the trained weights: left out of a checkpoint's fingerprint, so a
# resumed run may use other threads, another runtime or calibration. `precision` is among them: autocast changes
# speed, not the recipe (master weights stay fp32), as a lab recipe resumed at another precision.
NOT_TRAINING = frozenset(
    {
        "checkpoint_dir",
        "num_threads",
        "inference_batch_size",
        "quantize",
        "runtime",
        "precision",
        "calibration",
        "threshold_strategy",
        "target_recall",
        "category_model",
    }
)


@dataclass
class Encoded:
    """Tokenised examples: input ids and (for BERT-like models) token type ids."""

    ids: list[list[int]]
    type_ids: list[list[int]] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def batch(self, index: np.ndarray, pad_id: int) -> dict[str, Any]:
        types = [self.type_ids[i] for i in index] if self.type_ids is not None else None
        return pad_batch([self.ids[i] for i in index], pad_id, types)


@dataclass
class TrainSettings:
    """Optimisation settings (copied from the backend's hyper-parameters)."""

    lr: float
    epochs: float
    batch_size: int
    weight_decay: float
    warmup_ratio: float
    class_weight: str | None
    patience: int
    eval_every: int
    seed: int
    checkpoint_dir: str | None
    max_steps: int | None = None
    grad_clip: float = 1.0
    precision: str = "float32"  # resolved: "float32" or "bfloat16" (autocast)
    # The backend's other training-relevant hyper-parameters (base model, truncation, LoRA shape…): part of the
    # checkpoint fingerprint.
    model: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_detector(cls, detector: Any) -> TrainSettings:
        """The settings named by a torch backend's hyper-parameters (the same names on every backend)."""
        own = {f.name for f in fields(cls)} - {"grad_clip", "precision", "model"}
        params = detector.get_params()
        return cls(
            **{name: params[name] for name in own},
            precision=resolve_precision(params.get("precision", "auto"), f"{detector.backend}.precision"),
            model={k: v for k, v in params.items() if k not in own and k not in NOT_TRAINING},
        )


def data_digest(data: Encoded, y: np.ndarray | None = None) -> dict[str, Any]:
    """Row count and sha256 of tokenised examples (ids, token types) and labels."""
    digest = hashlib.sha256()
    for rows in (data.ids, data.type_ids or []):
        for row in rows:
            digest.update(np.asarray(row, dtype=np.int64).tobytes() + b";")
        digest.update(b"|")
    if y is not None:
        digest.update(np.asarray(y, dtype=np.int64).tobytes())
    return {"n": len(data), "sha256": digest.hexdigest()}


def run_fingerprint(
    settings: TrainSettings, train_data: Encoded, y: np.ndarray, dev: tuple[Encoded, np.ndarray] | None
) -> dict[str, Any]:
    """What a checkpoint must match to be resumed: the settings (not where checkpoints go, nor the precision) and
    the digests of the training and dev data."""
    kept = {k: v for k, v in asdict(settings).items() if k not in ("checkpoint_dir", "precision")}
    fingerprint = {
        "settings": kept,
        "train_data": data_digest(train_data, y),
        "dev_data": data_digest(*dev) if dev is not None else None,
    }
    return json.loads(
        json.dumps(fingerprint, default=str)
    )  # as it reads back from meta.json (tuples → lists)


def encode_dev(encode: Callable[[Any], Encoded], dev: tuple[Any, Any] | None) -> tuple[Encoded, Any] | None:
    """Encode the dev split for early stopping; None when it is missing or has one class (AUROC is undefined)."""
    if dev is None or len(set(dev[1].tolist())) != 2:
        return None
    return encode(dev[0]), dev[1]


def predict_logits(
    forward: Callable[[dict[str, Any]], Any],
    data: Encoded,
    pad_id: int,
    batch_size: int,
    desc: str | None = None,
    split_gaps: bool = False,
    precision: str = "float32",
) -> np.ndarray:
    """Logits (n, 2) in input order, computed in length-sorted batches with dynamic padding (under bf16 autocast
    with `precision="bfloat16"`)."""
    import torch
    from tqdm.auto import tqdm

    out = np.zeros((len(data), 2), dtype=np.float64)
    batches = list(length_sorted_batches([len(s) for s in data.ids], batch_size, split_gaps))
    with torch.inference_mode(), autocast(precision):
        for index in tqdm(batches, desc=desc, disable=desc is None, leave=False):
            out[index] = forward(data.batch(index, pad_id)).float().numpy()
    return out


def optimizer_step(
    forward: Callable[[dict[str, Any]], Any],
    batch: dict[str, Any],
    labels: Any,
    loss_fn: Callable[[Any, Any], Any],
    optimizer: Any,
    params: list[Any],
    grad_clip: float,
    precision: str = "float32",
) -> float:
    """One optimizer step of `train`: the forward pass under autocast (`precision`), the loss in fp32, backward,
    gradient-norm clipping at `grad_clip` and the optimizer step; returns the loss. The caller sets the learning
    rate (bench/train_step.py times this very step)."""
    import torch

    with autocast(precision):
        logits = forward(batch)
    loss = loss_fn(logits.float(), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
    return loss.item()


def train(
    model: Any,
    forward: Callable[[dict[str, Any]], Any],
    train_data: Encoded,
    y: np.ndarray,
    dev: tuple[Encoded, np.ndarray] | None,
    pad_id: int,
    settings: TrainSettings,
    desc: str = "train",
) -> dict[str, Any]:
    """Fine-tune the trainable parameters of `model`; returns the history (losses, dev AUROC, best step, precision).

    With `settings.checkpoint_dir`, resumes the checkpoint there when its fingerprint matches (a `ModelError`
    naming the first difference otherwise) and removes the checkpoints once the run is complete.
    """
    import torch
    from sklearn.metrics import roc_auc_score
    from tqdm.auto import tqdm

    lengths = [len(s) for s in train_data.ids]
    steps_per_epoch = math.ceil(len(train_data) / settings.batch_size)
    total = max(1, math.ceil(steps_per_epoch * settings.epochs))
    if settings.max_steps:
        total = min(total, settings.max_steps)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=settings.lr,
    )
    warmup = int(total * settings.warmup_ratio)

    def lr_at(step: int) -> float:
        if step < warmup:
            return settings.lr * (step + 1) / max(1, warmup)
        return settings.lr * max(0.0, (total - step) / max(1, total - warmup))

    weights = torch.tensor(class_weights(y, settings.class_weight), dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights)
    history: dict[str, Any] = {"loss": [], "dev": [], "total_steps": total, "resumed_from": None}
    best: dict[str, Any] = {"auroc": -1.0, "step": 0, "state": None}
    step = 0
    ckpt = Path(settings.checkpoint_dir) if settings.checkpoint_dir else None
    fingerprint = run_fingerprint(settings, train_data, y, dev)
    if ckpt is not None:
        meta = load_checkpoint(ckpt, model, optimizer, fingerprint)
        if meta is not None:
            step = int(meta["step"])
            history = meta["history"]
            history["resumed_from"] = step
            best = {"auroc": meta["best_auroc"], "step": meta["best_step"], "state": None}
    eval_every = settings.eval_every or steps_per_epoch
    bad_evals = 0
    # Optimisation time summed over sessions, so a resumed run still reports what its training cost.
    earlier_seconds = float(history.get("seconds", 0.0))
    if history["resumed_from"] is not None:
        history["seconds_before_resume"] = earlier_seconds
    loop_started = time.perf_counter()

    def evaluate() -> float:
        model.eval()
        logits = predict_logits(
            forward, dev[0], pad_id, settings.batch_size * 2, precision=settings.precision
        )
        model.train()
        p = torch.softmax(torch.tensor(logits), dim=1)[:, 1].numpy()
        return float(roc_auc_score(dev[1], p)) if len(set(dev[1].tolist())) == 2 else float("nan")

    model.train()
    bar = tqdm(total=total, initial=step, desc=desc, unit="step")
    epoch = step // steps_per_epoch
    stop = False
    while step < total and not stop:
        # The order depends only on (seed, epoch), so a resumed run sees the same batches it would have.
        batches = bucketed_train_batches(
            lengths, settings.batch_size, np.random.default_rng([settings.seed, epoch])
        )
        for index in batches[step - epoch * steps_per_epoch :]:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            loss = optimizer_step(
                forward,
                train_data.batch(index, pad_id),
                torch.tensor(y[index], dtype=torch.long),
                loss_fn,
                optimizer,
                params,
                settings.grad_clip,
                settings.precision,
            )
            step += 1
            history["loss"].append(round(loss, 5))
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}")
            if dev is not None and (step % eval_every == 0 or step == total):
                auroc = evaluate()
                history["dev"].append({"step": step, "auroc": auroc})
                bar.set_postfix(loss=f"{loss:.3f}", dev_auroc=f"{auroc:.3f}")
                if auroc > best["auroc"]:
                    best = {"auroc": auroc, "step": step, "state": _snapshot(model)}
                    bad_evals = 0
                else:
                    bad_evals += 1
                    if settings.patience and bad_evals >= settings.patience:
                        stop = True
            history["seconds"] = round(earlier_seconds + time.perf_counter() - loop_started, 3)
            if ckpt is not None and (step % eval_every == 0 or step == total or stop):
                save_checkpoint(
                    ckpt,
                    model,
                    optimizer,
                    {
                        "step": step,
                        "history": history,
                        "best_auroc": best["auroc"],
                        "best_step": best["step"],
                        "fingerprint": fingerprint,
                    },
                    # A new best is persisted with its checkpoint, so a resumed run can restore it at the end.
                    best=best["state"] if best["step"] == step else None,
                )
            if step >= total or stop:
                break
        epoch += 1
    bar.close()
    if best["state"] is None and ckpt is not None:
        # Resumed, and no evaluation since beat the stored best: its weights are in the checkpoint folder.
        best["state"] = load_best_weights(ckpt, model, best["step"])
        if best["state"] is None and best["step"] and best["step"] != step:
            log.warning(
                "%s has no best weights for step %d (written by an older seawall): keeping the last weights",
                ckpt,
                best["step"],
            )
    if best["state"] is not None:
        _restore(model, best["state"])
    history["best_step"] = best["step"]
    history["best_dev_auroc"] = best["auroc"]
    history["stopped_early"] = stop
    history["steps"] = step
    history["precision"] = settings.precision
    if ckpt is not None:
        remove_checkpoints(ckpt)
    model.eval()
    return history


def _snapshot(model: Any) -> dict[str, Any]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def _restore(model: Any, state: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        for n, p in model.named_parameters():
            if n in state:
                p.copy_(state[n])
