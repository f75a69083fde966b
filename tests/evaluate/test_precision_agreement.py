"""scripts/precision_agreement.py (float32 vs bfloat16 evaluation generation) and the experiment's eval.dtype."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from seawall.data.suites import OVERREFUSAL_SUITES, SAFETY_SUITES
from seawall.detect import is_refusal
from seawall.evaluate.experiment import Experiment, ExperimentConfig
from seawall.evaluate.metrics import rate
from seawall.generation.cache import GenerationCache, model_fingerprint
from seawall.models import precision

ROOT = Path(__file__).resolve().parents[2]
EVAL = {
    "n_harmful_per_suite": 3,
    "n_benign_per_suite": 3,
    "decoding": {"max_new_tokens": 6, "batch_size": 8},
    "n_boot": 200,
}


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location(
        "precision_agreement", ROOT / "scripts" / "precision_agreement.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def bf16(monkeypatch):
    """bf16 resolves to bf16 whatever the CPU (emulated without bf16 units: slower, same rounding)."""
    monkeypatch.setattr(precision, "bf16_supported", lambda: True)


def _config(tiny_model, tmp_path, **eval_settings):
    return ExperimentConfig.model_validate(
        {
            "model": str(tiny_model),
            "output": str(tmp_path / "run"),
            "threads": 1,
            "eval": {**EVAL, **eval_settings},
        }
    )


def test_generate_report_on_the_tiny_model(script, tiny_model, tiny_data, tmp_path, bf16):
    load, split = tiny_data
    from seawall.detect import make_detector

    detector = tmp_path / "detector"
    make_detector("tfidf").fit(split("securebreak")["train"]).save(detector)
    cache = GenerationCache(tmp_path / "generations.sqlite")
    report = script.agreement_report(
        [str(tiny_model)],
        _config(tiny_model, tmp_path),
        str(detector),
        cache,
        load=load,
        is_refusal=is_refusal,
        log=lambda s: None,
    )
    assert report["judges"] == ["refusal", "detector"] and report["detector_id"]
    assert report["eval"]["n_harmful_per_suite"] == 3 and report["machine"]["bf16_supported"]
    (model,) = report["models"]
    runs = model["dtypes"]
    assert set(runs) == {"float32", "bfloat16"}
    # the generation cache keys by dtype: two fingerprints, each dtype's answers stored apart
    assert runs["float32"]["fingerprint"] == model_fingerprint(tiny_model, "float32")
    assert runs["bfloat16"]["fingerprint"] == model_fingerprint(tiny_model, "bfloat16")
    assert runs["float32"]["fingerprint"] != runs["bfloat16"]["fingerprint"]
    n_harmful, n_benign = 3 * len(SAFETY_SUITES), 3 * len(OVERREFUSAL_SUITES)  # 3 prompts per suite
    assert len(cache) == 2 * (n_harmful + n_benign)
    for run in runs.values():
        assert set(run["hrr"]) == {"refusal", "detector"}
        assert run["hrr"]["refusal"]["n"] == n_harmful and run["overrefusal"]["n"] == n_benign
        low, high = run["overrefusal"]["ci95"]
        assert low <= run["overrefusal"]["rate"] <= high
    agreement = model["agreement"]
    assert set(agreement["decisions"]) == {"hrr_refusal", "hrr_detector", "overrefusal"}
    assert all(0.0 <= v <= 1.0 for v in agreement["decisions"].values())
    assert 0.0 <= agreement["token_identity"] <= 1.0 and agreement["tokens_compared"] > 0
    assert set(model["verdicts"]) == {"hrr_refusal", "hrr_detector", "overrefusal"}
    assert report["agree"] == all(v["agree"] for v in model["verdicts"].values())
    out = tmp_path / "report.json"
    out.write_text(json.dumps(report))
    page = script.render(json.loads(out.read_text()), "report.json")
    assert "| HRR (detector) |" in page and "| over-refusal |" in page and "report.json" in page

    # a second run answers everything from the cache: no model is loaded, nothing is generated
    again = script.agreement_report(
        [str(tiny_model)],
        _config(tiny_model, tmp_path),
        None,
        cache,
        load=load,
        is_refusal=is_refusal,
        log=lambda s: None,
    )
    assert len(cache) == 2 * (n_harmful + n_benign) and cache.hits >= 2 * (n_harmful + n_benign)
    assert again["models"][0]["dtypes"]["bfloat16"]["hrr"]["refusal"] == runs["bfloat16"]["hrr"]["refusal"]


def test_generate_refuses_a_cpu_without_bf16(script, tiny_model, tmp_path, monkeypatch):
    from seawall.errors import SeawallError

    monkeypatch.setattr(precision, "bf16_supported", lambda: False)
    with pytest.raises(SeawallError, match="no bf16 matrix units"):
        script.agreement_report([str(tiny_model)], _config(tiny_model, tmp_path), None, None)


def _run(unsafe: list[int], refused: list[int], responses: list[str]) -> dict:
    safety = [
        {"suite": "s", "id": str(i), "response": r, "unsafe_refusal": u}
        for i, (u, r) in enumerate(zip(unsafe, responses, strict=True))
    ]
    over = [
        {"suite": "b", "id": str(i), "response": r, "refused": f}
        for i, (f, r) in enumerate(zip(refused, responses, strict=True))
    ]
    return {
        "hrr": {"refusal": rate(unsafe, 500)},
        "overrefusal": rate(refused, 500),
        "safety_rows": safety,
        "overrefusal_rows": over,
    }


def test_the_verdict_is_false_for_a_disagreeing_pair_and_true_for_an_identical_one(script):
    n = 40
    answers = ["I can't help with that"] * n
    same = script.compare(
        {"float32": _run([1] * n, [0] * n, answers), "bfloat16": _run([1] * n, [0] * n, answers)}, str.split
    )
    assert same["agree"] and same["agreement"]["token_identity"] == 1.0
    assert same["agreement"]["decisions"] == {"hrr_refusal": 1.0, "overrefusal": 1.0}

    flipped = ["Sure, here is how"] * n
    differ = script.compare(
        {"float32": _run([0] * n, [0] * n, answers), "bfloat16": _run([1] * n, [1] * n, flipped)}, str.split
    )
    assert not differ["agree"]
    assert not differ["verdicts"]["hrr_refusal"]["overlap"] and not differ["verdicts"]["overrefusal"]["agree"]
    assert differ["agreement"]["decisions"]["hrr_refusal"] == 0.0
    assert len(differ["agreement"]["disagreeing_ids"]["overrefusal"]) == n
    assert differ["agreement"]["token_identity"] == 0.0 and differ["agreement"]["identical_answers"] == 0.0


def test_overlapping_intervals_with_a_difference_beyond_the_half_width_do_not_agree(script):
    a = {"rate": 0.40, "n": 100, "ci95": [0.30, 0.50]}
    b = {"rate": 0.52, "n": 100, "ci95": [0.42, 0.62]}
    verdict = script.within_intervals(a, b)
    assert verdict["overlap"] and verdict["half_width"] == pytest.approx(0.10) and not verdict["agree"]
    assert script.within_intervals(a, {**b, "rate": 0.45, "ci95": [0.35, 0.55]})["agree"]


def test_runs_over_different_prompts_are_refused(script):
    a, b = _run([1, 0], [0, 0], ["x", "y"]), _run([1, 0], [0, 0], ["x", "y"])
    b["safety_rows"][1]["id"] = "other"
    with pytest.raises(ValueError, match="different prompts"):
        script.compare({"float32": a, "bfloat16": b}, str.split)


def test_the_experiment_generates_in_its_eval_dtype_and_records_it(tiny_model, tiny_data, tmp_path, bf16):
    load, split = tiny_data
    calls = []

    def factory(model_dir, decoding, threads, dtype):
        calls.append(dtype)
        return lambda conversations, settings: ["I can't help with that."] * len(conversations)

    results = {}
    for dtype in ("float32", "bfloat16", "auto"):
        config = _config(tiny_model, tmp_path / dtype, dtype=dtype, n_task=2)
        experiment = Experiment(
            config,
            load=load,
            split=split,
            is_refusal=is_refusal,
            generator_factory=factory,
            log=lambda s: None,
        )
        results[dtype] = experiment.measure_model("original", tiny_model, ("sst2",))
    assert calls == ["float32", "bfloat16", "auto"]
    assert [results[d]["dtype"] for d in ("float32", "bfloat16", "auto")] == [
        "float32",
        "bfloat16",
        "bfloat16",
    ]
    assert results["float32"]["fingerprint"] == model_fingerprint(tiny_model, "float32")
    # auto resolves to bf16 here: it shares bf16's fingerprint, so its generations and results
    assert (
        results["auto"]["fingerprint"]
        == results["bfloat16"]["fingerprint"]
        != results["float32"]["fingerprint"]
    )
    assert "dtype" not in results["auto"]["settings"]
    assert ExperimentConfig().eval.dtype == "auto"  # the default, made explicit; behaviour unchanged


def test_the_calibration_page_is_the_committed_json(script):
    source = ROOT / "docs" / "results" / "precision-calibration.json"
    report = json.loads(source.read_text())
    page = script.render(report, "docs/results/precision-calibration.json")
    assert page == (ROOT / "docs" / "results" / "precision-calibration.md").read_text()
    assert page.count("\n| 0.") == len(report["rows"]) > 0
