"""SafeGene runs sharing one adapter: each applies its own selection and coefficients, never a previous run's."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from seawall.errors import ModelError
from seawall.gene import CalibrateConfig, SelectConfig, calibrate, extract, get_method, select_layers
from seawall.gene.adapter import layer_index
from seawall.gene.modeling import load_causal_lm
from seawall.gene.selection import choose_layers

FAST = dict(max_epochs=2, batch_size=6, response_tokens=4, max_length=64)


@pytest.fixture()
def adapter_dir(trio, tmp_path):
    extract(trio["A"], trio["D"], tmp_path / "adapter", progress=False)
    return tmp_path / "adapter"


def _block_weights(state):
    return {n: w for n, w in state.items() if layer_index(n) is not None and w.dim() == 2}


def _expected(trio, alpha_of_layer):
    """T + α_l·(A − D) on every block linear weight, from the models' own state dicts."""
    a, d, t = (trio["models"][k].state_dict() for k in "ADT")
    return {n: t[n] + alpha_of_layer(layer_index(n)) * (a[n] - d[n]) for n in _block_weights(t)}


def _assert_weights(folder, expected):
    out = load_file(str(folder / "model.safetensors"))
    for name, weight in expected.items():
        assert torch.allclose(out[name], weight, atol=1e-6), name


def test_calibrate_null_applies_alpha_one_not_the_previous_targets_alpha(trio, shots, adapter_dir, tmp_path):
    from seawall.gene import SafetyAdapter

    # A previous target's calibration is recorded in the shared manifest (the `gene calibrate` workflow).
    calibrate(SafetyAdapter.load(adapter_dir), trio["T"], shots, CalibrateConfig(**FAST), progress=False)
    recorded = json.loads((adapter_dir / "safegene.json").read_text())
    assert recorded["coefficients"] and any(a != 1.0 for a in recorded["coefficients"].values())

    result = get_method("safegene")({"select": None, "calibrate": None}).apply(
        trio["T"], tmp_path / "out", adapter=adapter_dir
    )
    assert result.report["selected_layers"] is None
    _assert_weights(tmp_path / "out", _expected(trio, lambda layer: 1.0))
    applied = json.loads((tmp_path / "out" / "safegene.json").read_text())
    assert applied["coefficients"] == {} and applied["calibration"] == {}
    assert set(applied["applied"]["coefficients"].values()) == {1.0}


def test_select_applies_its_own_selection_and_leaves_the_shared_manifest_alone(
    trio, shots, adapter_dir, tmp_path
):
    from seawall.gene import SafetyAdapter

    one = SelectConfig(score="contrast", top_k=1, cumulative=None, batch_size=6, max_length=64)
    select_layers(
        SafetyAdapter.load(adapter_dir),
        shots,
        aligned=trio["A"],
        degraded=trio["D"],
        config=one,
        progress=False,
    )
    before = (adapter_dir / "safegene.json").read_text()
    recorded = json.loads(before)
    assert len(recorded["selected_layers"]) == 1
    # Same score on the same shots: the expected three layers follow from the recorded contrast scores.
    wanted = choose_layers(recorded["layer_scores"]["contrast"], top_k=3)
    three = {**one.model_dump(), "top_k": 3}

    result = get_method("safegene")({"select": three, "calibrate": None}).apply(
        trio["T"], tmp_path / "out", adapter=adapter_dir, aligned=trio["A"], degraded=trio["D"], shots=shots
    )
    assert result.report["selected_layers"] == wanted
    _assert_weights(tmp_path / "out", _expected(trio, lambda layer: 1.0 if layer in wanted else 0.0))
    assert (adapter_dir / "safegene.json").read_text() == before
    assert json.loads((tmp_path / "out" / "safegene.json").read_text())["selected_layers"] == wanted

    # The recorded selection is reused only when it was made with the run's own settings and shots.
    again = get_method("safegene")({"select": one.model_dump(), "calibrate": None}).apply(
        trio["T"], tmp_path / "again", adapter=adapter_dir, shots=shots
    )
    assert again.report["selected_layers"] == recorded["selected_layers"]
    assert "layer_scores" not in again.report


def test_a_calibrated_run_applies_its_own_fit_without_recording_it(trio, shots, adapter_dir, tmp_path):
    before = (adapter_dir / "safegene.json").read_text()
    result = get_method("safegene")({"select": None, "calibrate": FAST}).apply(
        trio["T"], tmp_path / "out", adapter=adapter_dir, shots=shots
    )
    alphas = result.report["coefficients"]
    assert set(alphas) == {"0", "1", "2", "3"}
    _assert_weights(tmp_path / "out", _expected(trio, lambda layer: alphas[str(layer)]))
    assert (adapter_dir / "safegene.json").read_text() == before
    written = json.loads((tmp_path / "out" / "safegene.json").read_text())
    assert written["coefficients"] == alphas and written["calibration"]["target"] == str(trio["T"])


def test_a_folder_with_only_pickled_weights_is_refused(trio, tmp_path):
    folder = tmp_path / "bin-only"
    folder.mkdir()
    model = trio["models"]["T"]
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(ModelError, match="safetensors"):
        load_causal_lm(folder)
