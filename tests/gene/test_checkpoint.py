"""Streaming safetensors I/O: reading, sharded writing, validation errors, fingerprints."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from seawall.errors import ModelError
from seawall.io import atomic_dir
from seawall.models.checkpoint import (
    ShardedWriter,
    fingerprint,
    first_mismatch,
    open_checkpoint,
)


def test_sharded_read_matches_state_dict(trio):
    model = trio["models"]["D"]
    ckpt = open_checkpoint(trio["D"])
    assert len(ckpt.files) > 1
    state = model.state_dict()
    seen = 0
    for name, tensor in ckpt.iter_tensors():
        assert torch.equal(tensor, state[name])
        seen += 1
    assert seen == len(ckpt) == len(state)


def test_writer_shards_and_index_roundtrip(tmp_path):
    tensors = {f"layer.{i}.weight": torch.randn(64, 64) for i in range(6)}
    with atomic_dir(tmp_path / "out") as tmp:
        writer = ShardedWriter(tmp, max_shard_bytes=3 * 64 * 64 * 4)
        for name, tensor in tensors.items():
            writer.add(name, tensor)
        files = writer.close()
    assert len(files) == 2
    index = json.loads((tmp_path / "out" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(tensors)
    ckpt = open_checkpoint(tmp_path / "out")
    for name, tensor in tensors.items():
        assert torch.equal(ckpt.get(name), tensor)


def test_nan_names_file_and_tensor(tmp_path):
    bad = torch.randn(4, 4)
    bad[1, 2] = float("nan")
    save_file(
        {"ok": torch.zeros(2), "model.layers.0.mlp.up_proj.weight": bad}, str(tmp_path / "model.safetensors")
    )
    ckpt = open_checkpoint(tmp_path)
    with pytest.raises(ModelError, match=r"model\.safetensors.*up_proj.*NaN/Inf"):
        list(ckpt.iter_tensors())


def test_truncated_file_is_clear_error(tmp_path):
    save_file({"w": torch.randn(32, 32)}, str(tmp_path / "model.safetensors"))
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[: len(data) - 100])
    with pytest.raises(ModelError, match="truncated"):
        open_checkpoint(tmp_path)


def test_fingerprint_fields_and_digest(trio):
    fa = fingerprint(trio["A"])
    fd = fingerprint(trio["D"])
    assert fa["model_type"] == "llama" and fa["num_layers"] == 4 and fa["hidden_size"] == 64
    assert fa["modules"]["model.layers.0.self_attn.k_proj.weight"] == [32, 64]
    assert fa["num_parameters"] == sum(p.numel() for p in trio["models"]["A"].parameters())
    assert fa["arch_digest"] == fd["arch_digest"]
    assert len(fd["files"]) > 1 and all(len(h) == 64 for h in fd["files"].values())
    assert fa["files"] != fd["files"]


def test_first_mismatch_names_module_and_shape():
    assert first_mismatch({"a": [2, 3]}, {"a": [2, 3]}) is None
    assert "'a'" in first_mismatch({"a": [2, 3]}, {"a": [3, 3]})
    assert "missing" in first_mismatch({"a": [2, 3], "b": [1]}, {"a": [2, 3]})


def test_writer_keeps_dtypes_and_metadata(tmp_path):
    tensors = {"bf": torch.randn(3, 5).to(torch.bfloat16), "i": torch.arange(7), "f16": torch.randn(2).half()}
    writer = ShardedWriter(tmp_path, metadata={"source": "test"})
    for name, tensor in tensors.items():
        writer.add(name, tensor)
    assert [p.name for p in writer.close()] == ["model.safetensors"]
    assert not list(tmp_path.glob(".*raw"))
    ckpt = open_checkpoint(tmp_path)
    for name, tensor in tensors.items():
        got = ckpt.get(name)
        assert got.dtype == tensor.dtype and torch.equal(got, tensor)
