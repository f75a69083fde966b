"""Early stopping across a resume: the best weights are persisted with the checkpoints and restored at the end."""

from __future__ import annotations

import numpy as np
import torch
from safetensors.torch import load_file

from seawall.detect.training import Encoded, TrainSettings, train

PAD = 0


class TinyClassifier(torch.nn.Module):
    """Mean-pooled embeddings and a linear 2-way head."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.embed = torch.nn.Embedding(12, 8)
        self.head = torch.nn.Linear(8, 2)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        mask = batch["attention_mask"].unsqueeze(-1).float()
        pooled = (self.embed(batch["input_ids"]) * mask).sum(1) / mask.sum(1)
        return self.head(pooled)


def _data(n: int, flip: bool, seed: int) -> tuple[Encoded, np.ndarray]:
    """Token 2 marks label 1 and token 3 label 0 (swapped with `flip`), among random filler tokens 4–11."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    ids = [[2 if label != flip else 3, *rng.integers(4, 12, rng.integers(1, 5)).tolist()] for label in y]
    return Encoded(ids), y.astype(np.int64)


def _settings(checkpoint_dir, max_steps: int | None) -> TrainSettings:
    return TrainSettings(
        lr=0.05,
        epochs=2,
        batch_size=8,
        weight_decay=0.0,
        warmup_ratio=0.0,
        class_weight=None,
        patience=0,  # no early stop: every evaluation after the resume runs and none beats the best
        eval_every=1,
        seed=0,
        checkpoint_dir=str(checkpoint_dir),
        max_steps=max_steps,
    )


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_resumed_run_restores_the_best_weights(tmp_path):
    train_data, y = _data(32, flip=False, seed=0)
    # The dev labels are the reverse of the training rule, so dev AUROC only falls as training goes on: the best
    # evaluation comes before the interruption and nothing after the resume beats it.
    dev = _data(16, flip=True, seed=1)
    ckpt = tmp_path / "ckpt"

    first = TinyClassifier(seed=0)
    h1 = train(first, first, train_data, y, dev, PAD, _settings(ckpt, max_steps=3), desc="first")
    assert h1["steps"] == 3 and h1["best_step"] <= 3
    best_weights = _weights(first)  # restored in memory by the uninterrupted first run: the best-step weights
    assert [p.name for p in ckpt.glob("best-step-*")] == [f"best-step-{h1['best_step']}.safetensors"]

    second = TinyClassifier(
        seed=1
    )  # different initial weights: everything must come from the checkpoint folder
    h2 = train(second, second, train_data, y, dev, PAD, _settings(ckpt, max_steps=None), desc="second")
    assert h2["resumed_from"] == 3 and h2["steps"] == 8
    # training time adds up over sessions: the resumed run knows what the first one spent
    assert h2["seconds_before_resume"] == h1["seconds"] > 0 and h2["seconds"] >= h1["seconds"]
    assert h2["best_step"] == h1["best_step"] and h2["best_dev_auroc"] == h1["best_dev_auroc"]
    later = [e["auroc"] for e in h2["dev"] if e["step"] > 3]
    assert len(later) == 5 and max(later) <= h1["best_dev_auroc"]

    restored = _weights(second)
    for name, value in best_weights.items():
        assert torch.equal(restored[name], value), name
    # ... and they are not the last weights, which the final checkpoint holds.
    last = load_file(str(ckpt / "step-8" / "model.safetensors"))
    assert not all(torch.equal(last[n], best_weights[n]) for n in best_weights)


def test_old_checkpoint_without_best_weights_keeps_the_last_ones(tmp_path, caplog):
    train_data, y = _data(32, flip=False, seed=0)
    dev = _data(16, flip=True, seed=1)
    ckpt = tmp_path / "ckpt"
    first = TinyClassifier(seed=0)
    h1 = train(first, first, train_data, y, dev, PAD, _settings(ckpt, max_steps=3), desc="first")
    for path in ckpt.glob("best-step-*"):
        path.unlink()  # what a checkpoint folder written before best weights were persisted looks like
    second = TinyClassifier(seed=1)
    with caplog.at_level("WARNING", logger="seawall.detect"):
        h2 = train(second, second, train_data, y, dev, PAD, _settings(ckpt, max_steps=None), desc="second")
    assert h2["best_step"] == h1["best_step"]
    assert f"no best weights for step {h1['best_step']}" in caplog.text
    last = load_file(str(ckpt / "step-8" / "model.safetensors"))
    for name, value in _weights(second).items():
        assert torch.equal(last[name], value), name
