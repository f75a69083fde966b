"""The experiment's `original:` stage: a base model is instructed into RUN/original, measured as "original", aligned
into A and given to the methods as their base; without the stage every step starts from `model` as before."""

import json
from pathlib import Path

import pytest

from seawall.detect import is_refusal
from seawall.evaluate import methods as eval_methods
from seawall.evaluate.experiment import Experiment, load_config
from seawall.lab import recipes
from seawall.lab.tiny import GEMMA_TURN_TOKENS, build_tiny_base_model

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# The original stage trains as the mini experiment's other stages do.
ORIGINAL_TRAIN = {"batch_size": 4, "grad_accum": 1, "max_length": 96, "learning_rate": 5e-3, "max_steps": 2}


def _config(mini_experiment, model, output, original):
    return mini_experiment(
        model,
        output,
        [{"name": "none"}, {"name": "safe-lora"}],
        name="mini-original",
        train={"max_steps": 2},
        original=original,
    )


@pytest.mark.slow
def test_the_instructed_base_is_the_measured_original_a_s_start_and_the_methods_base(
    mini_experiment, tiny_data, tmp_path, monkeypatch
):
    load, split = tiny_data
    base = build_tiny_base_model(tmp_path / "base", GEMMA_TURN_TOKENS)
    original = {
        "chat_template": "auto",
        "data": {"n_alpaca": 6, "n_math": 2},
        "train": {**ORIGINAL_TRAIN, "method": "lora", "lora_r": 4},
    }
    run = tmp_path / "run"
    bases = []
    apply_method = eval_methods.apply_method

    def spy(name, params, base, **inputs):
        bases.append(base)
        return apply_method(name, params, base=base, **inputs)

    monkeypatch.setattr(eval_methods, "apply_method", spy)
    results = Experiment(
        _config(mini_experiment, base, run, original),
        load=load,
        split=split,
        is_refusal=is_refusal,
        log=lambda s: None,
    ).run()

    instructed = run / "original" / "model"
    record = json.loads((run / "original" / "record.json").read_text())
    assert record["recipe"] == "instruct" and record["chat_template"]["template"] == "gemma"
    assert record["config"]["model"] == str(base)
    rows = results["rows"]
    assert [r.get("method", r["model"]) for r in rows] == [
        "original",
        "aligned",
        "degraded",
        "none",
        "safe-lora",
    ]
    measured = json.loads((run / "evals" / "original" / "result.json").read_text())
    assert measured["model"] == str(instructed) and measured["safety"]["n"] == 4
    assert json.loads((run / "aligned" / "record.json").read_text())["config"]["model"] == str(instructed)
    assert bases == [instructed]  # Safe LoRA's alignment matrix is W_A − W_original: the instructed original
    assert results["config"]["original"]["chat_template"] == "auto"


def test_without_an_original_stage_align_starts_from_model_as_written(tmp_path, monkeypatch):
    """The recipe identity check refuses a folder trained with another recipe: the step configs must not change."""
    seen = {}
    monkeypatch.setattr(recipes, "align", lambda recipe, out, **kw: seen.setdefault("align", recipe))
    monkeypatch.setattr(recipes, "instruct", lambda recipe, out, **kw: seen.setdefault("instruct", recipe))

    smollm2 = Experiment(
        load_config(CONFIGS / "smollm2-135m.yaml", output=str(tmp_path / "s")), is_refusal=is_refusal
    )
    smollm2.aligned()
    assert seen.pop("align").model == "smollm2-135m-instruct" and "instruct" not in seen

    gemma = Experiment(
        load_config(CONFIGS / "gemma3-270m.yaml", output=str(tmp_path / "g")), is_refusal=is_refusal
    )
    gemma.aligned()
    assert seen["align"].model == str(tmp_path / "g" / "original" / "model")
    assert seen["instruct"].model == "gemma3-270m" and seen["instruct"].chat_template == "gemma"
