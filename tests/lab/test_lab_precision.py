"""The lab loop's precision: bf16 autocast with fp32 master weights, recorded; not part of a run's identity."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from seawall.errors import SeawallError
from seawall.lab import train as train_module
from seawall.lab.config import TrainConfig
from seawall.lab.train import ChatExample, load_causal_lm, train
from seawall.models import precision

EXAMPLES = [
    ChatExample.of(f"e{i}", f"Write a story about cat {i}.", f"Once upon a time cat {i} slept.", source="t")
    for i in range(8)
]
FULL = TrainConfig(
    method="full", learning_rate=1e-3, batch_size=2, grad_accum=1, max_length=64, checkpoint_every=1
)


@pytest.fixture
def bf16_cpu(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda: True)


def test_bf16_autocast_training_is_recorded_and_keeps_fp32_weights(tiny_model, tmp_path, bf16_cpu):
    record = train(tiny_model, EXAMPLES, FULL, tmp_path / "bf16")
    assert record["precision"] == "bfloat16" and record["train"]["precision"] == "auto"
    assert record["losses"][-1] < record["losses"][0]
    weights = load_file(tmp_path / "bf16" / "model" / "model.safetensors")
    assert {w.dtype for w in weights.values()} == {torch.float32}
    reference = train(
        tiny_model, EXAMPLES, FULL.model_copy(update={"precision": "float32"}), tmp_path / "fp32"
    )
    assert reference["precision"] == "float32"
    fp32 = load_file(tmp_path / "fp32" / "model" / "model.safetensors")
    differences = [(weights[n] - fp32[n]).abs().max().item() for n in fp32]
    assert 0 < max(differences) < 0.05  # bf16 matrix products: a close, not identical, trajectory


def test_precision_is_not_part_of_a_runs_identity(tiny_model, tmp_path, monkeypatch, bf16_cpu):
    real = train_module._save_checkpoint

    def save_then_crash(path, model, optimizer, state):
        real(path, model, optimizer, state)
        if state["step"] == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_model, EXAMPLES, FULL, tmp_path / "out")
    monkeypatch.setattr(train_module, "_save_checkpoint", real)
    # resumed in fp32 (another machine, say): the same recipe, so the checkpoint is used, not refused
    recipe = {
        "recipe": "test",
        "config": {"train": FULL.model_copy(update={"precision": "float32"}).model_dump(mode="json")},
    }
    config = FULL.model_copy(update={"precision": "float32"})
    record = train(tiny_model, EXAMPLES, config, tmp_path / "out", record=recipe)
    assert record["steps"] == 4 and record["precision"] == "float32"
    assert json.loads((tmp_path / "out" / "record.json").read_text())["steps"] == 4
    # the finished output is reused for the recipe at another precision, and still refused for another recipe
    again = {"recipe": "test", "config": {"train": FULL.model_dump(mode="json")}}
    assert train(tiny_model, EXAMPLES, FULL, tmp_path / "out", record=again) == record
    other = {
        "recipe": "test",
        "config": {"train": FULL.model_copy(update={"learning_rate": 1e-2}).model_dump(mode="json")},
    }
    with pytest.raises(SeawallError, match=r"config\.train\.learning_rate was 0\.001, now 0\.01"):
        train(tiny_model, EXAMPLES, FULL, tmp_path / "out", record=other)


def test_folder_with_only_pickled_weights_is_refused(tiny_model, tmp_path):
    folder = tmp_path / "pickled"
    shutil.copytree(tiny_model, folder)
    weights = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    torch.save(weights, folder / "pytorch_model.bin")
    with pytest.raises(
        SeawallError, match=r"cannot load a causal LM from .*no file named model\.safetensors"
    ):
        load_causal_lm(folder)
