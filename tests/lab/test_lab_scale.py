"""`seawall lab scale`: base + weight × (aligned − base) on real tiny Llamas, saved as a loadable model folder."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from seawall.cli import app
from seawall.errors import ModelError
from seawall.generation.tiny import build_tiny_chat_model
from seawall.lab.scale import scale

runner = CliRunner()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    return build_tiny_chat_model(root / "base", seed=0), build_tiny_chat_model(root / "aligned", seed=1)


def _state(folder):
    return load_file(str(folder / "model.safetensors"))


def test_weights_0_and_1_give_the_endpoints_and_half_the_midpoint(pair, tmp_path):
    base, aligned = pair
    start, end = _state(base), _state(aligned)
    for weight, expected in ((0.0, start), (1.0, end)):
        scale(base, aligned, weight, tmp_path / f"w{weight}")
        got = _state(tmp_path / f"w{weight}" / "model")
        assert set(got) == set(end)
        assert all(torch.allclose(got[k], expected[k], atol=1e-6) for k in got)
    scale(base, aligned, 0.5, tmp_path / "half")
    half = _state(tmp_path / "half" / "model")
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.allclose(half[name], (start[name] + end[name]) / 2, atol=1e-6)
    assert not torch.allclose(half[name], end[name])


def test_the_output_is_a_model_that_loads_and_answers(pair, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base, aligned = pair
    record = scale(base, aligned, 0.75, tmp_path / "out")
    assert record["recipe"] == "scale" and record["config"]["weight"] == 0.75 and record["steps"] == 0
    folder = tmp_path / "out" / "model"
    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.chat_template  # the aligned model's chat template came along
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True)
    ids = tokenizer("hello", return_tensors="pt").input_ids
    assert model.generate(ids, max_new_tokens=3, do_sample=False).shape[1] == ids.shape[1] + 3
    assert json.loads((tmp_path / "out" / "record.json").read_text()) == record


def test_rerun_reuses_and_other_inputs_need_overwrite(pair, tmp_path):
    base, aligned = pair
    first = scale(base, aligned, 0.5, tmp_path / "out")
    assert scale(base, aligned, 0.5, tmp_path / "out") == first
    with pytest.raises(ModelError, match="other inputs"):
        scale(base, aligned, 0.6, tmp_path / "out")
    assert scale(base, aligned, 0.6, tmp_path / "out", overwrite=True)["config"]["weight"] == 0.6


def test_mismatched_architectures_and_negative_weights_are_refused(pair, tmp_path):
    from seawall.lab.tiny import build_tiny_base_model

    base, aligned = pair
    with pytest.raises(ModelError, match="weight must be"):
        scale(base, aligned, -0.5, tmp_path / "neg")
    other = build_tiny_base_model(tmp_path / "other", turn_tokens=["<a>", "<b>", "<c>", "<d>"])
    with pytest.raises(ModelError, match="same architecture"):
        scale(other, aligned, 0.5, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_cli(pair, tmp_path):
    base, aligned = pair
    out = tmp_path / "cli"
    args = [
        "lab",
        "scale",
        "--base",
        str(base),
        "--aligned",
        str(aligned),
        "--weight",
        "0.25",
        "-o",
        str(out),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["config"]["weight"] == 0.25
    assert (out / "model" / "model.safetensors").is_file()
