"""Resuming the shared training loop: best weights across a resume, fingerprinted checkpoints, clean-up on success."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import seawall.detect.training as training
from seawall.detect.training import Encoded, TrainSettings, train
from seawall.errors import ModelError

PAD = 0
INTERRUPT_AT = 3


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


def _settings(checkpoint_dir) -> TrainSettings:
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
        checkpoint_dir=str(checkpoint_dir) if checkpoint_dir else None,
    )


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.fixture
def interrupted(monkeypatch):
    """Run `train` until the checkpoint of step INTERRUPT_AT is written, then kill it; record every saved state."""
    real = training.save_checkpoint
    saved: dict[int, dict[str, torch.Tensor]] = {}

    def save(folder, model, optimizer, meta, **kwargs):
        real(folder, model, optimizer, meta, **kwargs)
        saved[meta["step"]] = _weights(model)
        if meta["step"] == INTERRUPT_AT and not saved.get("resumed"):
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(training, "save_checkpoint", save)

    def run(model, train_data, y, dev, settings):
        with pytest.raises(KeyboardInterrupt):
            train(model, model, train_data, y, dev, PAD, settings, desc="interrupted")
        saved["resumed"] = True
        return saved

    return run


def test_resumed_run_restores_the_best_weights(tmp_path, interrupted):
    train_data, y = _data(32, flip=False, seed=0)
    # The dev labels are the reverse of the training rule, so dev AUROC only falls as training goes on: the best
    # evaluation comes before the interruption and nothing after the resume beats it.
    dev = _data(16, flip=True, seed=1)
    ckpt = tmp_path / "ckpt"
    straight = TinyClassifier(seed=0)
    reference = train(straight, straight, train_data, y, dev, PAD, _settings(None), desc="straight")
    assert reference["best_step"] <= INTERRUPT_AT

    saved = interrupted(TinyClassifier(seed=0), train_data, y, dev, _settings(ckpt))
    assert [p.name for p in ckpt.glob("best-step-*")] == [f"best-step-{reference['best_step']}.safetensors"]
    first_seconds = json.loads((ckpt / f"step-{INTERRUPT_AT}" / "meta.json").read_text())["history"][
        "seconds"
    ]

    # different initial weights: everything must come from the checkpoint folder
    second = TinyClassifier(seed=1)
    h2 = train(second, second, train_data, y, dev, PAD, _settings(ckpt), desc="second")
    assert h2["resumed_from"] == INTERRUPT_AT and h2["steps"] == 8
    # training time adds up over sessions: the resumed run knows what the first one spent
    assert h2["seconds_before_resume"] == first_seconds > 0 and h2["seconds"] >= first_seconds
    assert h2["best_step"] == reference["best_step"] and h2["best_dev_auroc"] == reference["best_dev_auroc"]
    later = [e["auroc"] for e in h2["dev"] if e["step"] > INTERRUPT_AT]
    assert len(later) == 5 and max(later) <= h2["best_dev_auroc"]
    restored = _weights(second)
    for name, value in _weights(straight).items():
        assert torch.allclose(restored[name], value, atol=1e-7), name
    # ... and they are not the last weights, which the final checkpoint held.
    assert not all(torch.equal(saved[8][n], restored[n]) for n in restored)
    assert not ckpt.exists()  # a finished run removes its checkpoints


def test_checkpoint_without_best_weights_keeps_the_last_ones(tmp_path, caplog, interrupted):
    train_data, y = _data(32, flip=False, seed=0)
    dev = _data(16, flip=True, seed=1)
    ckpt = tmp_path / "ckpt"
    saved = interrupted(TinyClassifier(seed=0), train_data, y, dev, _settings(ckpt))
    for path in ckpt.glob("best-step-*"):
        path.unlink()  # what a checkpoint folder written before best weights were persisted looks like
    second = TinyClassifier(seed=1)
    with caplog.at_level("WARNING", logger="seawall.detect"):
        h2 = train(second, second, train_data, y, dev, PAD, _settings(ckpt), desc="second")
    assert f"no best weights for step {h2['best_step']}" in caplog.text
    assert h2["steps"] == 8
    for name, value in _weights(second).items():
        assert torch.equal(saved[8][name], value), name


def test_checkpoint_of_other_settings_or_data_is_refused(tmp_path, interrupted):
    train_data, y = _data(32, flip=False, seed=0)
    dev = _data(16, flip=True, seed=1)
    ckpt = tmp_path / "ckpt"
    interrupted(TinyClassifier(seed=0), train_data, y, dev, _settings(ckpt))
    model = TinyClassifier(seed=1)
    before = _weights(model)
    with pytest.raises(ModelError, match=r"first difference: fingerprint\.settings\.lr was 0\.05, now 0\.1"):
        train(model, model, train_data, y, dev, PAD, replace(_settings(ckpt), lr=0.1))
    other_data, other_y = _data(32, flip=False, seed=5)
    with pytest.raises(ModelError, match=r"fingerprint\.train_data\.sha256 was '[0-9a-f]+', now"):
        train(model, model, other_data, other_y, dev, PAD, _settings(ckpt))
    with pytest.raises(ModelError, match=r"fingerprint\.settings\.model\.max_length was None, now 64"):
        train(model, model, train_data, y, dev, PAD, replace(_settings(ckpt), model={"max_length": 64}))
    # refused before anything was restored into the model
    assert all(torch.equal(before[n], p) for n, p in _weights(model).items())
    meta_file = ckpt / f"step-{INTERRUPT_AT}" / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["fingerprint"]  # a checkpoint written before fingerprints existed
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="older seawall without a fingerprint"):
        train(model, model, train_data, y, dev, PAD, _settings(ckpt))


def test_finished_run_removes_its_checkpoints_so_an_edited_config_trains_again(tmp_path):
    train_data, y = _data(32, flip=False, seed=0)
    ckpt = tmp_path / "ckpt"
    first = TinyClassifier(seed=0)
    h1 = train(first, first, train_data, y, None, PAD, _settings(ckpt))
    assert h1["steps"] == 8 and not ckpt.exists()
    edited = TinyClassifier(seed=0)
    h2 = train(edited, edited, train_data, y, None, PAD, replace(_settings(ckpt), lr=0.01))
    assert h2["resumed_from"] is None and h2["steps"] == 8
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), edited.parameters(), strict=True))


def test_bf16_autocast_training_keeps_fp32_master_weights(tmp_path):
    train_data, y = _data(32, flip=False, seed=0)
    fp32, bf16 = TinyClassifier(seed=0), TinyClassifier(seed=0)
    h32 = train(fp32, fp32, train_data, y, None, PAD, _settings(None))
    h16 = train(bf16, bf16, train_data, y, None, PAD, replace(_settings(None), precision="bfloat16"))
    assert (h32["precision"], h16["precision"]) == ("float32", "bfloat16")
    assert all(p.dtype == torch.float32 for p in bf16.parameters())
    # the matrix products ran in bf16: close to, but not bit-identical with, the fp32 run
    differences = [
        (a - b).abs().max().item() for a, b in zip(fp32.parameters(), bf16.parameters(), strict=True)
    ]
    assert 0 < max(differences) < 0.05
    assert h16["loss"][-1] < h16["loss"][0]
