"""Detector backends read weights from safetensors only: a folder holding just pickled weights is refused."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from seawall.detect import load_detector, make_detector
from seawall.errors import ModelError


def _pickled_copy(folder, tmp_path, weights_name="model.safetensors", pickled_name="pytorch_model.bin"):
    """A copy of `folder` whose safetensors weights were replaced by the same tensors in a pickle file."""
    copy = tmp_path / f"pickled-{folder.name}"
    shutil.copytree(folder, copy)
    tensors = load_file(str(copy / weights_name))
    (copy / weights_name).unlink()
    torch.save(tensors, copy / pickled_name)
    return copy


def _both_labels(split):
    rows = [r for r in split if r.response.strip()]
    return [r for r in rows if r.y == 1][:4] + [r for r in rows if r.y == 0][:4]


def test_encoder_refuses_a_base_model_with_pickled_weights(tmp_path, tiny_bert_dir, sb_split):
    folder = _pickled_copy(tiny_bert_dir, tmp_path)
    det = make_detector("encoder", base_model=str(folder), max_steps=1)
    with pytest.raises(
        ModelError, match=r"cannot load an encoder classifier .*no file named model\.safetensors"
    ):
        det.fit(_both_labels(sb_split["train"]))


def test_lm_judge_refuses_a_base_model_with_pickled_weights(tmp_path, tiny_llama_dir):
    folder = _pickled_copy(tiny_llama_dir, tmp_path)
    judge = make_detector("lm-judge", base_model=str(folder), finetune=False)
    with pytest.raises(ModelError, match=r"cannot load a causal LM judge .*no file named model\.safetensors"):
        judge.fit([])


def test_lm_judge_refuses_a_pickled_adapter(tmp_path, tiny_llama_dir, sb_split):
    train = _both_labels(sb_split["train"])
    judge = make_detector(
        "lm-judge", base_model=str(tiny_llama_dir), response_tokens=16, batch_size=8, max_steps=1
    )
    folder = judge.fit(train).save(tmp_path / "judge")
    adapter = folder / "adapter"
    tensors = load_file(str(adapter / "adapter_model.safetensors"))
    (adapter / "adapter_model.safetensors").unlink()
    torch.save(tensors, adapter / "adapter_model.bin")  # PEFT itself would load this pickle
    with pytest.raises(ModelError, match=r"lacks adapter_model\.safetensors"):
        load_detector(folder)
