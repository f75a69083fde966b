"""SafeGene calibration in bf16 against float32 on the tiny trio (A, D = A nudged, T = A nudged)."""

from __future__ import annotations

import json

import pytest
import torch

from seawall.gene import CalibrateConfig, calibrate, extract
from seawall.gene.calibration import CalibrationObjective, DeltaForward, prepare_data, selected_modules
from seawall.gene.modeling import load_tokenizer
from seawall.models import precision

FAST = dict(max_epochs=4, batch_size=6, response_tokens=4, max_length=64)


@pytest.fixture()
def bf16(monkeypatch):
    """bf16 resolves to bf16 whatever the CPU (torch emulates it where there are no bf16 units: slower, same math)."""
    monkeypatch.setattr(precision, "bf16_supported", lambda: True)


@pytest.fixture()
def adapter(trio, tmp_path):
    return extract(trio["A"], trio["D"], tmp_path / "adapter", progress=False)


def _fp32_objective(adapter, model, tokenizer, shots, config):
    forward = DeltaForward(model, adapter, selected_modules(adapter, None))
    return forward, CalibrationObjective(forward, prepare_data(model, tokenizer, shots, config), config)


def test_bf16_fit_agrees_with_fp32_within_tolerance(adapter, trio, shots, bf16):
    """The tolerance: bf16 rounds W + α·τ to 8 significant bits, which limits how finely α can be resolved.

    `scripts/precision_agreement.py calibration` (docs/results/precision-calibration.md) fits 24 tiny cases (3 seeds
    × 2 τ scales × 4 settings): per-layer α mostly agree to a few hundredths and to ~3% of the fitted gain, but the
    per-(layer, module type) fits and the odd per-layer L-BFGS fit stall on bf16's flat steps and end far away,
    which is why float32 stays the default. On this trio the default per-layer fit lands on the same α: |Δα| ≤ 5% of
    α_max, and α_bf16 is as good a solution of the *float32* problem as α_fp32 up to 2% of what the fp32 fit gained
    (a flat minimum makes |Δα| alone too strict a test).
    """
    model, tokenizer = trio["models"]["T"], load_tokenizer(trio["T"])
    fits = {
        p: calibrate(
            adapter, model, shots, CalibrateConfig(**FAST, precision=p), tokenizer, False, record=False
        )
        for p in ("float32", "bfloat16")
    }
    assert fits["bfloat16"].precision == "bfloat16" and fits["float32"].precision == "float32"
    assert next(model.parameters()).dtype == torch.float32  # the caller's model is copied, not converted
    a32, a16 = fits["float32"].coefficients, fits["bfloat16"].coefficients
    assert a32 != a16  # the fit really ran in another precision
    assert max(abs(a32[g] - a16[g]) for g in a32) <= 0.05 * CalibrateConfig().alpha_max
    forward, objective = _fp32_objective(adapter, model, tokenizer, shots, CalibrateConfig(**FAST))
    loss = {
        p: objective.value(torch.tensor([f.coefficients[g] for g in forward.groups])) for p, f in fits.items()
    }
    gain = fits["float32"].initial_loss - loss["float32"]
    assert gain > 0 and loss["bfloat16"] - loss["float32"] <= 0.02 * gain


def test_bf16_loss_and_gradient_track_fp32(adapter, trio, shots):
    """One pass at a fixed α: bf16 weights change the loss in the 4th digit and the gradient by a few percent."""
    from seawall.gene.calibration import at_precision

    model, tokenizer = trio["models"]["T"], load_tokenizer(trio["T"])
    config = CalibrateConfig(**FAST)
    data = prepare_data(model, tokenizer, shots, config)
    modules = selected_modules(adapter, None)
    full = CalibrationObjective(DeltaForward(model, adapter, modules), data, config)
    half_model = at_precision(model, "bfloat16", copy=True)
    half = CalibrationObjective(DeltaForward(half_model, adapter, modules), data, config)
    assert half.forward.deltas[0].dtype == torch.bfloat16 and half.cached
    alpha = torch.tensor([0.3, 1.2, 0.8, 0.5])
    l32, g32 = full.value_and_grad(alpha)
    l16, g16 = half.value_and_grad(alpha)
    assert g16.dtype == torch.float32  # α and its gradient stay float32
    assert abs(l16 - l32) <= 1e-3 * abs(l32)
    assert float(torch.nn.functional.cosine_similarity(g16, g32, dim=0)) > 0.99
    assert half.value(torch.zeros(4)) == pytest.approx(full.value(torch.zeros(4)), rel=1e-3)


def test_precision_is_recorded_and_falls_back_on_cpus_without_bf16(adapter, trio, shots, monkeypatch):
    config = CalibrateConfig(**FAST, precision="bfloat16")
    monkeypatch.setattr(precision, "bf16_supported", lambda: True)
    calibrate(adapter, trio["T"], shots, config, progress=False)
    record = json.loads((adapter.path / "safegene.json").read_text())["calibration"]
    assert (record["precision"], record["precision_used"]) == ("bfloat16", "bfloat16")
    monkeypatch.setattr(precision, "bf16_supported", lambda: False)
    result = calibrate(adapter, trio["T"], shots, config, progress=False)
    record = json.loads((adapter.path / "safegene.json").read_text())["calibration"]
    assert (record["precision"], record["precision_used"], result.precision) == (
        "bfloat16",
        "float32",
        "float32",
    )
    default = calibrate(adapter, trio["T"], shots, CalibrateConfig(**FAST), progress=False, record=False)
    assert default.record["precision_used"] == "float32"  # float32 unless asked, on any CPU


def test_precision_changes_the_experiments_cache_keys_and_bad_values_name_the_field():
    """The experiment reuses a restored T′ only for the same method params (record.json) and measures a model again
    when `produced_by` changes: a different calibrate.precision is a different key for both."""
    from pydantic import ValidationError

    from seawall.evaluate.experiment import MethodSpec

    specs = [
        MethodSpec(name="safegene", params={"calibrate": {"precision": p}}) for p in ("float32", "bfloat16")
    ]
    assert specs[0].params != specs[1].params
    assert specs[0].model_dump(mode="json") != specs[1].model_dump(mode="json")
    with pytest.raises(ValidationError, match="precision"):
        CalibrateConfig(precision="float16")
