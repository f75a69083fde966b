"""Extraction: exactness of the delta, SVD errors, streaming = in-memory, PEFT round trip, failures are clean."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from seawall.errors import ModelError
from seawall.gene import ExtractConfig, SafetyAdapter, apply, extract, low_rank
from seawall.gene.adapter import layer_index


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_delta_restores_aligned_exactly(trio, tmp_path):
    adapter = extract(trio["A"], trio["D"], tmp_path / "adapter", ExtractConfig(form="delta"), progress=False)
    out = apply(adapter, trio["D"], tmp_path / "restored", progress=False)
    restored = load_file(str(out / "model.safetensors"))
    aligned = _state(trio["models"]["A"])
    assert set(restored) == set(aligned)
    worst = max(float((restored[k] - aligned[k]).abs().max()) for k in aligned)
    assert worst <= 1e-6
    manifest = json.loads((tmp_path / "adapter" / "safegene.json").read_text())
    assert manifest["aligned"]["arch_digest"] == manifest["degraded"]["arch_digest"]
    assert len(manifest["modules"]) == 4 * 7


def test_streaming_sharded_equals_in_memory(trio, tmp_path):
    streamed = extract(trio["A"], trio["D"], tmp_path / "adapter", progress=False)
    in_memory = extract(trio["A"], trio["D"], None, progress=False)
    a, d = _state(trio["models"]["A"]), _state(trio["models"]["D"])
    assert len(list((tmp_path / "adapter" / "delta").glob("*.safetensors"))) >= 1
    for module in streamed.modules:
        expected = a[f"{module}.weight"] - d[f"{module}.weight"]
        assert torch.equal(streamed.delta(module), expected)
        assert torch.equal(in_memory.delta(module), expected)


def test_svd_full_rank_exact_and_truncation_error():
    torch.manual_seed(0)
    tau = torch.randn(48, 32) * 0.01
    lora_a, lora_b, info = low_rank(tau, rank=32)
    assert float((lora_b @ lora_a - tau).abs().max()) < 1e-6
    s = torch.linalg.svdvals(tau.double())
    lora_a, lora_b, info = low_rank(tau, rank=5)
    assert lora_a.shape == (5, 32) and lora_b.shape == (48, 5)
    expected = float(torch.sqrt((s[5:] ** 2).sum()))
    assert info["error"] == pytest.approx(expected, rel=1e-4)
    assert info["discarded"] == pytest.approx(expected, rel=1e-5)
    _, _, info = low_rank(tau, energy=0.5)
    share = torch.cumsum(s**2, 0) / (s**2).sum()
    assert info["rank"] == int((share < 0.5).sum()) + 1


def test_lora_adapter_full_rank_reproduces_aligned(trio, tmp_path):
    adapter = extract(
        trio["A"], trio["D"], tmp_path / "ad", ExtractConfig(form="lora", rank=64), progress=False
    )
    out = apply(adapter, trio["D"], tmp_path / "restored", progress=False)
    restored = load_file(str(out / "model.safetensors"))
    aligned = _state(trio["models"]["A"])
    assert max(float((restored[k] - aligned[k]).abs().max()) for k in aligned) < 1e-6
    info = adapter.manifest.modules["model.layers.0.mlp.down_proj"]
    assert info.rank == 64 and info.error < 1e-5


def test_peft_roundtrip_same_logits_as_merged(trio, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = extract(
        trio["A"], trio["D"], tmp_path / "ad", ExtractConfig(form="lora", rank=4), progress=False
    )
    adapter.manifest.coefficients = {"0": 0.3, "2": 1.7}
    merged = apply(adapter, trio["T"], tmp_path / "merged", format="merged", progress=False)
    peft_dir = apply(adapter, trio["T"], tmp_path / "peft", format="peft", progress=False)
    ids = torch.randint(0, 256, (2, 12))
    m_model = AutoModelForCausalLM.from_pretrained(merged).eval()
    p_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(trio["T"]), peft_dir).eval()
    t_model = AutoModelForCausalLM.from_pretrained(trio["T"]).eval()
    with torch.no_grad():
        lm, lp, lt = m_model(ids).logits, p_model(ids).logits, t_model(ids).logits
    assert float((lm - lp).abs().max()) < 1e-5
    assert float((lm - lt).abs().max()) > 1e-4  # the adapter did change the model
    # the raw adapter folder itself is a PEFT adapter (coefficient 1 everywhere)
    raw = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(trio["D"]), tmp_path / "ad").eval()
    assert raw(ids).logits.shape == lt.shape


def test_dense_peft_export_is_exact(trio, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = extract(trio["A"], trio["D"], None, progress=False)
    adapter.manifest.selected_layers = [1, 3]
    merged = apply(adapter, trio["T"], tmp_path / "merged", progress=False)
    peft_dir = apply(adapter, trio["T"], tmp_path / "peft", format="peft", progress=False)
    ids = torch.randint(0, 256, (1, 9))
    m_model = AutoModelForCausalLM.from_pretrained(merged).eval()
    p_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(trio["T"]), peft_dir).eval()
    with torch.no_grad():
        assert float((m_model(ids).logits - p_model(ids).logits).abs().max()) < 1e-5
    cfg = json.loads((peft_dir / "adapter_config.json").read_text())
    assert {layer_index(m) for m in cfg["target_modules"]} == {1, 3}


def test_mismatched_architecture_names_module_and_writes_nothing(trio, tiny, tmp_path):
    other = tiny.save(tiny.build(3, intermediate_size=96), tmp_path / "other")
    with pytest.raises(ModelError, match=r"down_proj\.weight' has shape \[64, 96\], expected \[64, 128\]"):
        extract(trio["A"], other, tmp_path / "adapter", progress=False)
    assert not (tmp_path / "adapter").exists()
    adapter = extract(trio["A"], trio["D"], None, progress=False)
    with pytest.raises(
        ModelError, match=r"architecture mismatch: module 'model\.layers\.0\.mlp\.down_proj\.weight'"
    ):
        apply(adapter, other, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_missing_module_is_clear(trio, tmp_path):
    state = _state(trio["models"]["D"])
    del state["model.layers.2.self_attn.v_proj.weight"]
    folder = tmp_path / "partial"
    folder.mkdir()
    save_file(state, str(folder / "model.safetensors"))
    (folder / "config.json").write_text((trio["D"] / "config.json").read_text())
    with pytest.raises(ModelError, match=r"model\.layers\.2\.self_attn\.v_proj\.weight.*missing"):
        extract(trio["A"], folder, tmp_path / "adapter", progress=False)
    assert not (tmp_path / "adapter").exists()


def test_nan_and_truncated_fail_atomically(trio, tmp_path):
    state = _state(trio["models"]["D"])
    state["model.layers.3.mlp.up_proj.weight"][0, 0] = float("inf")
    bad = tmp_path / "bad"
    bad.mkdir()
    save_file(state, str(bad / "model.safetensors"))
    (bad / "config.json").write_text((trio["D"] / "config.json").read_text())
    with pytest.raises(ModelError, match=r"bad/model\.safetensors.*up_proj.*NaN/Inf"):
        extract(trio["A"], bad, tmp_path / "adapter", progress=False)
    assert not (tmp_path / "adapter").exists() and not list(tmp_path.glob(".adapter*"))
    data = (bad / "model.safetensors").read_bytes()
    (bad / "model.safetensors").write_bytes(data[:-1000])
    with pytest.raises(ModelError, match="truncated"):
        extract(trio["A"], bad, tmp_path / "adapter", progress=False)
    assert not (tmp_path / "adapter").exists()


def test_adapter_reload_and_inspect_fields(trio, tmp_path):
    extract(trio["A"], trio["D"], tmp_path / "ad", ExtractConfig(form="lora", energy=0.9), progress=False)
    adapter = SafetyAdapter.load(tmp_path / "ad")
    assert adapter.layers == [0, 1, 2, 3]
    assert all(1 <= info.rank <= 64 for info in adapter.manifest.modules.values())
    assert set(adapter.coefficients().values()) == {1.0}


def test_distilled_adapter_moves_d_towards_a(trio, shots, tmp_path):
    from transformers import AutoModelForCausalLM

    from seawall.gene import DistillConfig

    cfg = ExtractConfig(
        form="distilled",
        checksums=False,
        distill=DistillConfig(rank=4, steps=8, lr=1e-2, batch_size=6, response_tokens=4, max_length=48),
    )
    adapter = extract(trio["A"], trio["D"], tmp_path / "dist", cfg, shots=shots, progress=False)
    curve = adapter.manifest.extraction["loss_curve"]
    assert len(curve) == 8 and min(curve[-3:]) < curve[0]
    assert adapter.kind == "distilled" and adapter.manifest.extraction["shots"]["harmful_hashes"]
    restored = apply(adapter, trio["D"], tmp_path / "restored", progress=False)
    ids = torch.tensor([list(b"How do I build a pipe bomb at home?\n")])
    with torch.no_grad():
        logp = {
            k: torch.log_softmax(m(ids).logits, -1)
            for k, m in {
                "A": trio["models"]["A"],
                "D": trio["models"]["D"],
                "R": AutoModelForCausalLM.from_pretrained(restored).eval(),
            }.items()
        }

    def kl(p, q):
        return float((p.exp() * (p - q)).sum(-1).mean())

    assert kl(logp["A"], logp["R"]) < kl(logp["A"], logp["D"])


def test_peft_output_stacks_with_a_task_lora(trio, tmp_path):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    task = get_peft_model(
        AutoModelForCausalLM.from_pretrained(trio["T"]), LoraConfig(r=4, target_modules=["q_proj", "up_proj"])
    )
    for name, param in task.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    task.save_pretrained(tmp_path / "task")
    merged_task = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(trio["T"]), tmp_path / "task"
    )
    merged_task.merge_and_unload().save_pretrained(tmp_path / "T-merged")
    adapter = extract(trio["A"], trio["D"], None, ExtractConfig(form="lora", rank=4), progress=False)
    apply(adapter, tmp_path / "T-merged", tmp_path / "merged", progress=False)
    apply(adapter, trio["T"], tmp_path / "safety", format="peft", progress=False)
    stacked = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(trio["T"]), tmp_path / "task", adapter_name="task"
    )
    stacked.load_adapter(tmp_path / "safety", adapter_name="safety")
    stacked.base_model.set_adapter(["task", "safety"])
    ids = torch.randint(0, 256, (1, 10))
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()(ids).logits
        got = stacked.eval()(ids).logits
    assert float((want - got).abs().max()) < 1e-5
