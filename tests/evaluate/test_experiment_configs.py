"""The experiment configs (configs/smollm2-135m.yaml, configs/gemma3-270m.yaml) validate without running: models,
stages, method parameters; a base model gets an `original:` stage, a chat model none; the two families are measured
the same way."""

from __future__ import annotations

from pathlib import Path

import pytest

from seawall.evaluate.experiment import load_config
from seawall.evaluate.methods import split_tuning
from seawall.gene import get_method
from seawall.models.packaged import find_packaged

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FAMILIES = ("smollm2-135m", "gemma3-270m")
EXPERIMENT_METHODS = {"none", "filter"}  # run by the experiment itself, not registered in seawall.gene


@pytest.mark.parametrize("name", FAMILIES)
def test_experiment_config_validates(name):
    config = load_config(CONFIGS / f"{name}.yaml")
    assert config.name == name and Path(config.output).name == name
    packaged = find_packaged(config.model)
    assert packaged is not None and packaged.kind == "causal-lm", config.model
    # A base model (no chat template) is made the original chat model first; a chat model is the original itself.
    assert (config.original is None) == packaged.chat_template
    # Every method's parameters are its config's fields: a misspelt key fails here, not an hour into a run.
    # SafeGene's `tune:` block is the experiment's (it checks every grid point's config too).
    for method in config.methods:
        if method.name not in EXPERIMENT_METHODS:
            params = split_tuning(method.params)[1] if method.name == "safegene" else method.params
            get_method(method.name)(params)
    assert config.methods[0].name == "none"


def test_gemma_runs_the_smollm2_chain_with_gemmas_own_turns():
    smollm2, gemma = (load_config(CONFIGS / f"{name}.yaml") for name in FAMILIES)
    assert gemma.original.chat_template == "gemma"
    assert gemma.original.data.n_alpaca > 0 and gemma.original.data.n_math > 0
    # The v2 alignment recipe (safe answers + self-distilled borderline answers), smaller.
    for field in ("refusal_targets", "n_harmful", "n_hh_refusals", "borderline_sources", "question_share"):
        assert getattr(gemma.align.data, field) == getattr(smollm2.align.data, field), field
    assert 0 < gemma.align.data.n_borderline <= smollm2.align.data.n_borderline
    assert gemma.customize.general_share == smollm2.customize.general_share == 0.2
    assert {m.name for m in gemma.methods} == {m.name for m in smollm2.methods}
    # The families compare: the same judge, decoding and evaluation suites' settings.
    assert gemma.eval.detector == smollm2.eval.detector
    assert gemma.eval.decoding == smollm2.eval.decoding and gemma.eval.dtype == smollm2.eval.dtype


def test_the_judge_is_the_strongest_detector_config():
    """The experiment runs offline, so it is judged by the strongest detector, not the fastest: the output of the
    detector config docs/detect.md names best regardless of time, so a reader can train it from the repository."""
    from seawall.detect.pipeline import TrainConfig

    strongest = TrainConfig.from_yaml(CONFIGS / "detector-mpnet-v4.yaml")
    for name in FAMILIES:
        assert load_config(CONFIGS / f"{name}.yaml").eval.detector == strongest.output, name
