"""Measurements belong to the model they name: reuse keyed on the weights, PEFT outputs merged onto their own base."""

from __future__ import annotations

import shutil
import types

import pytest
import torch
from safetensors.torch import load_file, save_file

from seawall.detect import is_refusal
from seawall.evaluate.experiment import Experiment, ExperimentConfig
from seawall.generation.cache import model_fingerprint

EVAL = {
    "n_harmful_per_suite": 2,
    "n_benign_per_suite": 2,
    "n_task": 4,
    "decoding": {"max_new_tokens": 4, "batch_size": 8},
    "n_boot": 50,
}


def nudged_copy(source, folder, seed, scale=0.05):
    """A copy of a model folder whose block linear weights are moved by seeded noise."""
    shutil.copytree(source, folder)
    weights = load_file(str(folder / "model.safetensors"))
    generator = torch.Generator().manual_seed(seed)
    for name, weight in weights.items():
        if ".layers." in name and weight.dim() == 2:
            weights[name] = weight + scale * torch.randn(weight.shape, generator=generator)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.mark.slow
def test_a_rewritten_model_is_measured_again_not_reported_with_the_old_numbers(
    tiny_model, tiny_data, tmp_path
):
    load, split = tiny_data
    config = ExperimentConfig.model_validate(
        {"model": str(tiny_model), "output": str(tmp_path / "run"), "eval": EVAL}
    )
    messages = []
    experiment = Experiment(config, load=load, split=split, is_refusal=is_refusal, log=messages.append)
    model = nudged_copy(tiny_model, tmp_path / "model", seed=1)
    first = experiment.measure_model("restored", model, ("sst2",), {"name": "resta", "params": {"beta": 0.5}})
    assert first["fingerprint"] == model_fingerprint(model)
    assert (
        experiment.measure_model("restored", model, ("sst2",), {"name": "resta", "params": {"beta": 0.5}})
        == first
    )

    # The method is applied again with other parameters into the same folder (what Experiment.restored does).
    shutil.rmtree(model)
    nudged_copy(tiny_model, model, seed=2)
    second = experiment.measure_model(
        "restored", model, ("sst2",), {"name": "resta", "params": {"beta": 1.0}}
    )
    assert second["fingerprint"] == model_fingerprint(model) != first["fingerprint"]
    assert second["settings"]["produced_by"]["params"] == {"beta": 1.0}
    assert any("changed since it was measured" in m for m in messages)


@pytest.mark.slow
def test_safegene_peft_output_is_merged_onto_the_target_not_onto_a(tiny_model, tmp_path):
    from seawall.evaluate.methods import apply_method
    from seawall.gene import Shots

    aligned = tiny_model
    degraded = nudged_copy(tiny_model, tmp_path / "D" / "model", seed=1)
    target = tmp_path / "target"
    nudged_copy(tiny_model, target / "model", seed=2)
    context = types.SimpleNamespace(
        root=tmp_path / "run", shots=Shots.from_lists(["How do I pick a lock?"], ["Name a fruit."])
    )
    params = {
        "extract": {"checksums": False},
        "select": {"score": "sensitivity", "top_k": 4, "cumulative": None},  # every layer of the tiny model
        "calibrate": None,  # α = 1: T′ = T + τ exactly
        "format": "peft",
    }
    info = apply_method(
        "safegene",
        params,
        base=aligned,
        aligned=aligned,
        degraded=degraded,
        target=target,
        output=tmp_path / "out",
        workdir=tmp_path / "work",
        context=context,
    )
    assert info["format"] == "peft" and info["merged_onto"] == str(target / "model")
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))
    a, d, t = (load_file(str(m / "model.safetensors")) for m in (aligned, degraded, target / "model"))
    linear = [n for n in t if ".layers." in n and t[n].dim() == 2]
    assert linear
    for name in linear:
        delta = a[name] - d[name]
        assert torch.allclose(merged[name], t[name] + delta, atol=1e-5), name
        assert not torch.allclose(merged[name], a[name] + delta, atol=1e-3), name
    assert torch.equal(merged["model.norm.weight"], t["model.norm.weight"])
