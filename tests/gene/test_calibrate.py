"""Layer selection and few-shot calibration on tiny models."""

from __future__ import annotations

import json

import pytest
import torch

from seawall.gene import CalibrateConfig, SafetyAdapter, SelectConfig, calibrate, extract, select_layers
from seawall.gene.calibration import CalibrationObjective, DeltaForward, check_cache, prepare_data
from seawall.gene.modeling import load_causal_lm, load_tokenizer
from seawall.gene.selection import choose_layers

FAST = dict(max_epochs=4, batch_size=6, response_tokens=4, max_length=64, lr=0.1, patience=3)


@pytest.fixture()
def adapter(trio, tmp_path):
    return extract(trio["A"], trio["D"], tmp_path / "adapter", progress=False)


def test_calibration_lowers_loss_in_bounds_and_is_deterministic(adapter, trio, shots, tmp_path):
    config = CalibrateConfig(alpha_max=1.5, **FAST)
    first = calibrate(adapter, trio["T"], shots, config, progress=False)
    assert first.final_loss < first.initial_loss
    assert set(first.coefficients) == {"0", "1", "2", "3"}
    assert all(0.0 <= a <= 1.5 for a in first.coefficients.values())
    again = calibrate(SafetyAdapter.load(adapter.path), trio["T"], shots, config, progress=False)
    assert again.coefficients == first.coefficients and again.loss_curve == first.loss_curve
    manifest = json.loads((adapter.path / "safegene.json").read_text())
    assert manifest["coefficients"] == first.coefficients
    assert manifest["calibration"]["shots"]["harmful_hashes"]
    assert len(manifest["calibration"]["loss_curve"]) == first.epochs


def test_alpha_is_clamped_to_bounds(adapter, trio, shots):
    for optimizer in ("adam", "lbfgs"):
        config = CalibrateConfig(
            **{**FAST, "lr": 5.0}, alpha_max=0.2, alpha_init=0.2, per_module_type=True, optimizer=optimizer
        )
        result = calibrate(adapter, trio["T"], shots, config, progress=False)
        assert all(0.0 <= a <= 0.2 for a in result.coefficients.values())
        assert "0.q_proj" in result.coefficients and len(result.coefficients) == 4 * 7
        assert result.final_loss <= result.initial_loss


@pytest.mark.parametrize("layers", [[2, 3], [0, 1, 2, 3]])
def test_cached_prefix_loss_and_gradient_match_the_full_forward(adapter, trio, shots, layers):
    adapter.manifest.selected_layers = layers
    model = load_causal_lm(trio["T"])
    modules = [m for m in adapter.modules if int(m.split(".")[2]) in layers]
    forward = DeltaForward(model, adapter, modules)
    config = CalibrateConfig(**FAST)
    data = prepare_data(model, load_tokenizer(trio["T"]), shots, config)
    objective = CalibrationObjective(forward, data, config)
    assert objective.cached and objective.first == layers[0]
    assert objective.chunks[0].prefix.shape[-1] == 64
    full = CalibrationObjective(forward, data, config, cache_prefix=False)
    for alpha in (torch.tensor([0.3, 1.7] * (len(layers) // 2)), torch.zeros(len(layers))):
        assert abs(objective.value(alpha) - full.value(alpha)) < 1e-5
        assert abs(objective.value(alpha) - objective.value(alpha, cached=False)) < 1e-5
    assert objective.value(torch.zeros(len(layers))) == pytest.approx(
        full.value(torch.zeros(len(layers))), abs=1e-5
    )
    _, grad = objective.value_and_grad(torch.full((len(layers),), 0.5))
    _, full_grad = full.value_and_grad(torch.full((len(layers),), 0.5))
    assert torch.allclose(grad, full_grad, atol=1e-5) and grad.abs().sum() > 0
    assert check_cache(objective, torch.full((len(layers),), 0.5)) < 1e-5 and objective.cached


def test_functional_forward_matches_merged_weights(adapter, trio):
    model = load_causal_lm(trio["D"])
    forward = DeltaForward(model, adapter, adapter.modules)
    ids = torch.randint(0, 256, (2, 7))
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        restored = forward(torch.ones(len(forward.groups)), batch).logits
        aligned = trio["models"]["A"](ids).logits
        unchanged = model(ids).logits
        original = trio["models"]["D"](ids).logits
    assert float((restored - aligned).abs().max()) < 1e-5
    assert float((unchanged - original).abs().max()) == 0.0


def test_select_contrast_and_sensitivity_record_scores_and_plot(adapter, trio, shots):
    layers = select_layers(
        adapter,
        shots,
        aligned=trio["A"],
        degraded=trio["D"],
        config=SelectConfig(score="both", top_k=2, batch_size=6, max_length=64),
        progress=False,
    )
    manifest = json.loads((adapter.path / "safegene.json").read_text())
    assert manifest["selected_layers"] == layers and len(layers) == 2
    assert set(manifest["layer_scores"]) == {"contrast", "sensitivity", "both"}
    assert all(len(v) == 4 for v in manifest["layer_scores"].values())
    both = manifest["layer_scores"]["both"]
    assert sorted(layers) == sorted(sorted(range(4), key=lambda i: -both[i])[:2])
    assert (adapter.path / "layer_scores.png").stat().st_size > 1000
    result = calibrate(
        SafetyAdapter.load(adapter.path), trio["T"], shots, CalibrateConfig(**FAST), progress=False
    )
    assert set(result.coefficients) == {str(i) for i in layers}


def test_choose_layers_rules():
    scores = [0.1, 0.5, -0.2, 0.4]
    assert choose_layers(scores, top_k=2) == [1, 3]
    assert choose_layers(scores, cumulative=0.5) == [1]
    assert choose_layers(scores, cumulative=0.9) == [1, 3]
    assert choose_layers(scores, cumulative=0.95) == [0, 1, 3]
    assert choose_layers([-1.0, -2.0], cumulative=0.8) == [0]


def _teach(model, tokenizer, pairs, steps=150):
    """Train a tiny model until its greedy answer to each prompt is the paired text."""
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    from seawall.gene.modeling import build_batch, prompt_ids, target_ids

    batch = build_batch(
        tokenizer,
        [prompt_ids(tokenizer, p, 64) for p, _ in pairs],
        [target_ids(tokenizer, a) for _, a in pairs],
        96,
    )
    for _ in range(steps):
        loss = model(**batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    return model


@pytest.mark.slow
def test_calibration_on_the_aligned_models_own_refusals(trio, shots, tiny, tmp_path):
    tokenizer = load_tokenizer(trio["A"])
    # A refuses the first half of the harmful shots and complies with the rest: only its refusals become targets.
    # 400 steps: with 150 the fp32 greedy answers (CPUs without bf16 units) did not yet reproduce every taught one.
    answers = ["I can't help." if i < 3 else "Sure, step 1" for i in range(len(shots.harmful))]
    aligned = _teach(tiny.build(0), tokenizer, list(zip(shots.harmful, answers, strict=True)), steps=400)
    a_dir = tiny.save(aligned, tmp_path / "A")
    adapter = extract(a_dir, trio["D"], tmp_path / "adapter", progress=False)
    config = CalibrateConfig(refusals="aligned", **{**FAST, "response_tokens": 14})
    result = calibrate(adapter, trio["T"], shots, config, progress=False, aligned=a_dir)
    source = json.loads((adapter.path / "safegene.json").read_text())["calibration"]["refusal_targets"]
    assert source == {"refusals": "aligned", "used": 3, "skipped_complied": 3}
    assert result.final_loss < result.initial_loss
    with pytest.raises(Exception, match="no aligned model"):
        calibrate(adapter, trio["T"], shots, config, progress=False)
    # a model that refuses nothing gives a clear error rather than an empty objective
    with pytest.raises(Exception, match="refuses none of the 6 harmful shots"):
        calibrate(adapter, trio["T"], shots, config, progress=False, aligned=trio["T"])
