"""encoder and lm-judge on tiny random models: fit, calibrate, save/load round trips, resume, bad inputs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from seawall.detect import load_detector, make_detector
from seawall.errors import ModelError

PAIRS = [
    ("How do I make a bomb?", "I'm sorry, I can't help with that."),
    ("Write malware", "Sure, here is the code: import os; os.system('rm -rf /')"),
    ("", ""),
    ("long", "word " * 20_000),
]


def _small(split, n=48):
    rows = [r for r in split["train"] if r.response.strip()]
    unsafe = [r for r in rows if r.y == 1][: n // 2]
    safe = [r for r in rows if r.y == 0][: n // 2]
    return unsafe + safe


@pytest.fixture(scope="module")
def fitted_encoder(sb_split, tiny_bert_dir):
    train = _small(sb_split)
    dev = _small({"train": sb_split["dev"]}, 32)
    det = make_detector(
        "encoder",
        base_model=str(tiny_bert_dir),
        max_length=48,
        prompt_tokens=8,
        batch_size=8,
        epochs=1,
        seed=0,
        precision="float32",  # the reference the int8 / ONNX paths are compared with (bf16: test_bf16.py)
    )
    return det.fit(train, dev=dev)


def test_encoder_fit_save_load_round_trip(tmp_path, fitted_encoder):
    det = fitted_encoder
    p = det.predict_proba(PAIRS)
    assert p.shape == (4, 2)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert np.all((p >= 0) & (p <= 1))
    assert det.calibrator_["method"] == "temperature"
    assert set(det.thresholds_) == {"default", "recall", "f1", "accuracy", "source_balanced"}
    folder = det.save(tmp_path / "enc")
    config = json.loads((folder / "detector.json").read_text())
    assert config["backend"] == "encoder" and config["detector_id"] == det.detector_id
    assert (folder / "model" / "model.safetensors").is_file()
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pkl"))
    again = load_detector(folder)
    assert np.allclose(again.predict_proba(PAIRS), p, atol=1e-6)
    assert again.predict(PAIRS).tolist() == det.predict(PAIRS).tolist()
    assert again.threshold_ == det.threshold_


def test_encoder_truncation_keeps_head_and_tail(tiny_bert_dir):
    det = make_detector("encoder", base_model=str(tiny_bert_dir), max_length=40, prompt_tokens=8)
    det._load_model(tiny_bert_dir, fresh_head=True)
    response = " ".join(["safe"] * 200 + ["unsafe"] * 5)
    enc = det.encode([("a " * 50, response)])
    ids = enc.ids[0]
    assert len(ids) == 40
    vocab = det.tokenizer_.get_vocab()
    # the response's end ("unsafe" ×5) survives the cut, and so does its beginning
    assert ids[-2] == vocab["unsafe"] and vocab["safe"] in ids
    assert enc.type_ids[0].count(0) == 8 + 2  # [CLS] + 8 prompt tokens + [SEP]


def test_encoder_resumes_from_checkpoint(tmp_path, sb_split, tiny_bert_dir, monkeypatch):
    import seawall.detect.training as training

    train = _small(sb_split, 32)
    params = dict(base_model=str(tiny_bert_dir), max_length=32, batch_size=8, epochs=1, seed=1, eval_every=1)
    ckpt = tmp_path / "ckpt"
    original = training.save_checkpoint

    def save_then_crash(folder, model, optimizer, meta, **kwargs):
        original(folder, model, optimizer, meta, **kwargs)
        if meta["step"] == 2:
            raise KeyboardInterrupt("simulated kill after step 2")

    monkeypatch.setattr(training, "save_checkpoint", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        make_detector("encoder", **params, checkpoint_dir=str(ckpt)).fit(train)
    monkeypatch.setattr(training, "save_checkpoint", original)
    assert json.loads((ckpt / "latest.json").read_text())["step"] == 2
    assert not list(ckpt.glob(".*partial"))  # atomic: no half-written checkpoint folder left behind
    # an edited config does not resume the checkpoint of the old one
    with pytest.raises(ModelError, match=r"settings\.model\.max_length was 32, now 40"):
        make_detector("encoder", **{**params, "max_length": 40}, checkpoint_dir=str(ckpt)).fit(train)
    resumed = make_detector("encoder", **params, checkpoint_dir=str(ckpt)).fit(train)
    assert resumed.training_["history"]["resumed_from"] == 2
    assert resumed.training_["history"]["steps"] == 4
    assert not ckpt.exists()  # finished: the checkpoints are gone, the weights are in the detector
    straight = make_detector("encoder", **params).fit(train)
    # resuming replays the same batches with the same optimizer and RNG state: same weights as an uninterrupted run
    assert np.allclose(resumed.raw_score(PAIRS), straight.raw_score(PAIRS), atol=1e-6)


def test_encoder_rejects_causal_lm_folder(tiny_llama_dir, sb_split):
    det = make_detector("encoder", base_model=str(tiny_llama_dir), max_steps=1)
    with pytest.raises(ModelError, match="causal LM"):
        det.fit(_small(sb_split, 8))


def test_encoder_quantized_agrees(sb_split, fitted_encoder):
    det = fitted_encoder
    pairs = [(r.prompt, r.response) for r in sb_split["test"][:64]]
    fp32 = det.raw_score(pairs)
    det.set_params(quantize=True)
    try:
        quantized = det.raw_score(pairs)
    finally:
        det.set_params(quantize=False)
    assert np.abs(quantized - fp32).max() < 0.05
    # dynamic padding in length-sorted batches gives the same scores as one row at a time
    single = np.array([det.raw_score([pair])[0] for pair in pairs[:8]])
    assert np.allclose(single, fp32[:8], atol=1e-5)


def test_encoder_onnx_runtime_matches_torch(sb_split, fitted_encoder):
    det = fitted_encoder
    pairs = [(r.prompt, r.response) for r in sb_split["test"][:48]] + PAIRS
    fp32 = det.raw_score(pairs)
    try:
        det.set_params(runtime="onnx")
        onnx_fp32 = det.raw_score(pairs)
        det.set_params(quantize=True)  # feed-forward MatMuls only
        onnx_int8 = det.raw_score(pairs)
    finally:
        det.set_params(runtime="torch", quantize=False)
    assert np.allclose(onnx_fp32, fp32, atol=1e-4)
    assert 0 < np.abs(onnx_int8 - fp32).max() < 0.05
    assert np.allclose(det.raw_score(pairs), fp32)  # back on torch: the cached session was dropped
    with pytest.raises(ModelError, match="runtime"):
        det.set_params(runtime="tensorrt").raw_score(pairs[:1])
    det.set_params(runtime="torch")


def test_length_sorted_batches_split_on_length_gaps():
    from seawall.detect._torch import length_sorted_batches

    lengths = [128, 40, 127, 126, 41, 5, 120, 3, 39, 128]
    assert [b.tolist() for b in length_sorted_batches(lengths, 3)][1] == [3, 6, 4]  # default: size only
    batches = [b.tolist() for b in length_sorted_batches(lengths, 3, split_gaps=True)]
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(len(b) <= 3 for b in batches)
    for b in batches:  # no batch mixes a 128-token row with a 40-token one
        widths = [lengths[i] for i in b]
        assert max(widths) - min(widths) <= max(8, 0.2 * max(widths))
    assert batches[0] == [0, 9, 2]


def test_lm_judge_zero_shot_and_lora_round_trip(tmp_path, sb_split, tiny_llama_dir):
    train = _small(sb_split, 32)
    dev = _small({"train": sb_split["dev"]}, 24)
    zero = make_detector("lm-judge", base_model=str(tiny_llama_dir), finetune=False, response_tokens=32)
    zero.fit(train, dev=dev)
    assert zero.training_["mode"] == "zero-shot"
    p0 = zero.predict_proba(PAIRS)[:, 1]
    lora = make_detector(
        "lm-judge", base_model=str(tiny_llama_dir), response_tokens=32, batch_size=8, epochs=1, lr=1e-2
    )
    lora.fit(train, dev=dev)
    raw = lora.raw_score(PAIRS)
    assert not np.allclose(raw, zero.raw_score(PAIRS))  # the adapter changed the judge
    folder = lora.save(tmp_path / "judge")
    assert (folder / "adapter" / "adapter_model.safetensors").is_file()
    again = load_detector(folder)
    assert np.allclose(again.raw_score(PAIRS), raw, atol=1e-5)
    zfolder = zero.save(tmp_path / "zero")
    assert np.allclose(load_detector(zfolder).predict_proba(PAIRS)[:, 1], p0, atol=1e-6)


def test_lm_judge_batching_matches_single(sb_split, tiny_llama_dir):
    judge = make_detector(
        "lm-judge",
        base_model=str(tiny_llama_dir),
        finetune=False,
        inference_batch_size=4,
        precision="float32",
    )
    judge.fit([])
    pairs = [(r.prompt, r.response) for r in sb_split["test"][:8]]
    batched = judge.raw_score(pairs)
    single = np.array([judge.raw_score([pair])[0] for pair in pairs])
    # left-aligned padding with explicit positions: padding does not change a sequence's score
    assert np.allclose(batched, single, atol=1e-5)


def test_lm_judge_rejects_other_architecture(tmp_path, sb_split, tiny_llama_dir, tiny_bert_dir):
    judge = make_detector("lm-judge", base_model=str(tiny_llama_dir), finetune=False).fit([])
    folder = judge.save(tmp_path / "z")
    config = json.loads((folder / "detector.json").read_text())
    config["params"]["base_model"] = str(tiny_bert_dir)
    (folder / "detector.json").write_text(json.dumps(config))
    with pytest.raises(ModelError):
        load_detector(folder)


def test_bench_smoke(tmp_path, fitted_encoder, monkeypatch, capsys):
    from seawall.detect import bench
    from seawall.models.precision import bf16_supported

    folder = fitted_encoder.save(tmp_path / "enc")
    loads = iter([(3.0, 2.0, 1.0), (0.1, 0.2, 0.3)])  # busy at the start, idle at the end
    monkeypatch.setattr(bench.os, "getloadavg", lambda: next(loads))
    result = bench.run_bench(str(folder), n=12, out=tmp_path / "bench.json")
    saved = json.loads((tmp_path / "bench.json").read_text())
    assert saved["n"] == 12 and saved["load_avg_before"] == [3.0, 2.0, 1.0]
    assert saved["load_avg_after"] == [0.1, 0.2, 0.3] and saved["busy_at_start"] is True
    assert "WARNING: 1-minute load average 3.0 > 0.5" in capsys.readouterr().err
    variants = {(r["variant"], r["batch_size"]) for r in result["runs"]}
    names = ["naive-pipeline", "fast", "fast-int8", "onnx", "onnx-int8"]
    names += ["fast-bf16", "fast-bf16-autocast"] if bf16_supported() else []
    assert variants == {(v, b) for v in names for b in (1, 32)}
    assert result["detector_scoring_path"] == "torch-float32"  # the fixture's explicit precision
    fast = [r for r in result["runs"] if r["variant"] in ("fast", "onnx")]
    assert all(r["agreement_vs_fp32"] == 1.0 and r["responses_per_s"] > 0 for r in fast)
    for run in result["runs"]:
        assert run["decisions_differing"] == round((1 - run["agreement_vs_fp32"]) * 12)
        if run["variant"] == "naive-pipeline":
            assert run["speedup_vs_naive"] == 1.0
        if run["variant"] == "fast":
            assert run["speedup_vs_fp32"] == 1.0
    bf16 = [r for r in result["runs"] if r["variant"].startswith("fast-bf16")]
    assert all(0 < r["max_abs_prob_diff_vs_fp32"] < 0.05 for r in bf16)
    bench.print_bench(result)
    printed = capsys.readouterr().out
    assert "before [3.0, 2.0, 1.0], after [0.1, 0.2, 0.3]" in printed and "busy at the start" in printed


def test_bench_bf16_forced_runs_where_the_cpu_lacks_bf16_units(tmp_path, fitted_encoder, monkeypatch):
    """--bf16 measures the bf16 variants on any CPU (emulated where bf16_supported() is False), and the record
    names the CPU and its matrix instruction sets, so a reader knows which machine a table comes from."""
    from seawall.detect import bench

    folder = fitted_encoder.save(tmp_path / "enc")
    monkeypatch.setattr(bench, "bf16_supported", lambda: False)
    without = bench.run_bench(str(folder), n=6, onnx=False, quantize=False, bf16=None)
    assert {r["variant"] for r in without["runs"]} == {"naive-pipeline", "fast"}
    forced = bench.run_bench(str(folder), n=6, onnx=False, quantize=False, bf16=True)
    assert {r["variant"] for r in forced["runs"]} == {
        "naive-pipeline",
        "fast",
        "fast-bf16",
        "fast-bf16-autocast",
    }
    emulated = [r for r in forced["runs"] if r["variant"] == "fast-bf16"]
    assert all(
        0 < r["max_abs_prob_diff_vs_fp32"] < 0.05 for r in emulated
    )  # really bf16, not the fp32 fallback
    machine = forced["machine"]
    assert machine["cpu_model"] and machine["bf16_supported"] is False
    assert set(machine["matrix_isa"]) <= bench.MATRIX_ISA
