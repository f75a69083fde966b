"""bf16 detectors on tiny random models: training under autocast, bf16 scoring copies, agreement with fp32."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from seawall.detect import load_detector, make_detector
from seawall.models import precision


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Run the bf16 paths whatever this CPU has (torch computes bf16 everywhere, natively or emulated)."""
    monkeypatch.setattr(precision, "bf16_supported", lambda: True)


@pytest.fixture
def fp32_cpu(monkeypatch):
    monkeypatch.setattr(precision, "bf16_supported", lambda: False)


def _rows(split, n):
    """n SecureBreak rows, half unsafe, each response ending in a word that gives its label away: a tiny random
    model learns it within a few steps, so its scores spread out as a trained detector's do (a barely trained one
    scores everything within 0.01 of its threshold, where any rounding flips decisions)."""
    rows = [r for r in split if r.response.strip()]
    picked = [r for r in rows if r.y == 1][: n // 2] + [r for r in rows if r.y == 0][: n // 2]
    return [
        replace(r, response=r.response + (" unsafe unsafe" if r.y == 1 else " safe safe")) for r in picked
    ]


def _pairs(split, n):
    return [(r.prompt, r.response) for r in _rows(split, n)]


BF16_TOLERANCE = 0.02  # |Δp| bound for a tiny model; MiniLM measured ~1e-3 (`seawall detect bench`)


def _assert_agrees(bf16: np.ndarray, fp32: np.ndarray, threshold: float) -> None:
    """Close scores, and the same decision wherever fp32 is not within bf16's error of the threshold."""
    assert 0 < np.abs(bf16 - fp32).max() < BF16_TOLERANCE  # bf16 matrix products: close, not identical
    clear = np.abs(fp32 - threshold) > BF16_TOLERANCE
    assert clear.mean() > 0.5  # the check below is about most rows, not a handful
    assert np.array_equal(bf16[clear] >= threshold, fp32[clear] >= threshold)


@pytest.fixture
def bf16_encoder(sb_split, tiny_bert_dir, bf16_cpu):
    det = make_detector(
        "encoder",
        base_model=str(tiny_bert_dir),
        max_length=64,
        prompt_tokens=16,
        batch_size=8,
        epochs=3,
        lr=5e-3,
        seed=0,
        category_model=False,
    )
    return det.fit(_rows(sb_split["train"], 96), dev=_rows(sb_split["dev"], 48))


def test_encoder_trains_with_autocast_and_scores_with_a_bf16_copy(tmp_path, bf16_encoder, sb_split):
    det = bf16_encoder
    assert det.training_["precision"] == "bfloat16" and det.training_["history"]["precision"] == "bfloat16"
    assert all(p.dtype == torch.float32 for p in det.model_.parameters())  # fp32 master weights
    assert det.scoring_path() == "torch-bfloat16"
    pairs = _pairs(sb_split["test"], 96)
    bf16 = det.score_unsafe(pairs)
    assert {p.dtype for p in det._fast_model.parameters()} == {torch.bfloat16}
    det.set_params(precision="float32")
    assert det.scoring_path() == "torch-float32" and det._fast_model is None
    fp32 = det.score_unsafe(pairs)
    det.set_params(precision="auto")
    _assert_agrees(bf16, fp32, det.threshold_)
    folder = det.save(tmp_path / "enc")
    saved = json.loads((folder / "detector.json").read_text())
    assert saved["params"]["precision"] == "auto" and saved["training"]["precision"] == "bfloat16"
    again = load_detector(folder)
    assert np.allclose(again.score_unsafe(pairs), bf16, atol=1e-6)


def test_encoder_bf16_keeps_dynamic_batching_exact_enough(bf16_encoder, sb_split):
    det = bf16_encoder
    pairs = _pairs(sb_split["test"], 12)
    batched = det.raw_score(pairs)
    single = np.array([det.raw_score([pair])[0] for pair in pairs])
    # padding changes bf16 rounding a little, never the picture
    assert np.abs(batched - single).max() < 0.01


def test_auto_is_fp32_on_a_cpu_without_bf16(sb_split, tiny_bert_dir, fp32_cpu):
    det = make_detector(
        "encoder",
        base_model=str(tiny_bert_dir),
        max_length=32,
        batch_size=8,
        max_steps=2,
        category_model=False,
    )
    det.fit(_rows(sb_split["train"], 16))
    assert det.training_["precision"] == "float32" and det.scoring_path() == "torch-float32"
    det.raw_score([("a", "b")])
    assert det._fast_model is None  # scoring used the fp32 model itself
    assert det.set_params(quantize=True).scoring_path() == "torch-int8"
    assert det.set_params(quantize=False, runtime="onnx").scoring_path() == "onnx-float32"


def test_lm_judge_bf16_scoring_agrees_with_fp32(sb_split, tiny_llama_dir, bf16_cpu):
    train, dev = _rows(sb_split["train"], 32), _rows(sb_split["dev"], 24)
    judge = make_detector(
        "lm-judge",
        base_model=str(tiny_llama_dir),
        response_tokens=32,
        batch_size=8,
        epochs=1,
        lr=1e-2,
        category_model=False,
    ).fit(train, dev=dev)
    assert judge.training_["precision"] == "bfloat16" and judge.scoring_path() == "torch-bfloat16"
    pairs = _pairs(sb_split["test"], 48)
    bf16 = judge.raw_score(pairs)
    # the scoring copy has the LoRA adapter merged in and bf16 weights; the judge keeps its fp32 PEFT model
    assert not hasattr(judge._scoring_model, "peft_config")
    assert {p.dtype for p in judge._scoring_model.parameters()} == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in judge.model_.parameters())
    fp32 = judge.set_params(precision="float32").raw_score(pairs)
    # A tiny judge scores every pair within a few hundredths (it cannot learn the task in a few steps), so the
    # check is on the ordering the thresholds cut: bf16 keeps it.
    assert 0 < np.abs(bf16 - fp32).max() < BF16_TOLERANCE
    ranks = [np.argsort(np.argsort(v)) for v in (bf16, fp32)]
    assert np.corrcoef(*ranks)[0, 1] > 0.95
