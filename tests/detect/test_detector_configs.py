"""Every configs/detector-*.yaml validates without training: the run model, the backend's hyper-parameters, the
data sources, the evaluation sets and the base model; the v2 configs share one mix; the cascade's members are the
outputs of other configs."""

from __future__ import annotations

from pathlib import Path

import pytest

from seawall.detect import make_detector
from seawall.detect.base import DETECTORS
from seawall.detect.data import RESPONSE_SETS, SOURCES, SPLITS
from seawall.detect.pipeline import TrainConfig
from seawall.models.packaged import find_packaged

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("detector-*.yaml"))
V2 = ("encoder-v2", "encoder-v2-fast", "mpnet-v2", "cascade-v2")
V2_LMJUDGE = ("lmjudge-smollm2-v2",)
V4 = ("encoder-v4-fast", "mpnet-v4", "cascade-v4", "ensemble-v4", "ensemble-v4-fast")
V4_LMJUDGE = ("lmjudge-gemma-v4",)


def _load(name: str) -> TrainConfig:
    return TrainConfig.from_yaml(ROOT / "configs" / f"detector-{name}.yaml")


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_validates(path):
    config = TrainConfig.from_yaml(path)
    assert path.stem == f"detector-{config.name}"  # one name for the file, the run and its results folder
    assert config.backend in DETECTORS
    # The constructor takes exactly the backend's hyper-parameters: a misspelt key is a TypeError here, not hours
    # into a run.
    detector = make_detector(config.backend, **config.params)
    assert {k: detector.get_params()[k] for k in config.params} == config.params
    assert set(config.data.sets) <= set(RESPONSE_SETS)
    assert set(config.data.max_train_rows) <= set(config.data.sets)
    for spec in config.eval_sets:
        name, _, split = spec.partition(":")
        assert name in SOURCES and (split or "test") in SPLITS, spec
    base = config.params.get("base_model")
    if base is not None:
        assert find_packaged(base) is not None or Path(base).exists(), base
    if config.report_dir:
        assert Path(config.report_dir).name == config.name


def test_new_configs_are_there():
    names = {p.stem.removeprefix("detector-") for p in CONFIGS}
    assert set(V2) | set(V2_LMJUDGE) | set(V4) | set(V4_LMJUDGE) <= names


def test_v4_configs_share_the_mix_and_eval_sets():
    """The v4 mix is the v3 mix plus attempts; its fast, strong and cascade configs compare row for row."""
    reference, v3 = _load("encoder-v4-fast"), _load("encoder-v3-fast")
    assert reference.data == v3.data.model_copy(update={"attempts": 600})
    assert reference.eval_sets == [*v3.eval_sets, "attempts:test"]
    assert reference.params == {**v3.params, "checkpoint_dir": "runs/detector/encoder-v4-fast.ckpt"}
    for name in V4:
        config = _load(name)
        assert config.data == reference.data and config.eval_sets == reference.eval_sets, name
    # mpnet-v4 is the mpnet-v2 recipe on the v4 data.
    assert _load("mpnet-v4").params == {
        **_load("mpnet-v2").params,
        "checkpoint_dir": "runs/detector/mpnet-v4.ckpt",
    }
    for name in V4_LMJUDGE:
        config = _load(name)
        # A judge caps every source to fit its time budget, the two v4 sources included, and is evaluated on the
        # same sets (on a seeded sample).
        assert config.data.sets == reference.data.sets and config.eval_sets == reference.eval_sets, name
        assert config.data.non_answers and config.data.attempts, name
        assert set(config.data.max_train_rows) == set(config.data.sets), name
        assert config.params["finetune"] is True and config.eval_max_rows, name


def test_v2_configs_share_the_mix_and_eval_sets():
    """Same train/dev data and evaluation sets, so their tables compare; the cascade's dev is its members' dev."""
    reference = _load("encoder-v2")
    for name in V2:
        config = _load(name)
        assert config.data == reference.data and config.eval_sets == reference.eval_sets, name
    for name in V2_LMJUDGE:
        config = _load(name)
        # The judges cap rows to fit the time budget, but draw on the same sources and evaluate on the same sets.
        assert config.data.sets == reference.data.sets and config.eval_sets == reference.eval_sets, name
        assert config.params["finetune"] is True and config.eval_max_rows
        assert config.params["checkpoint_dir"]


def test_mpnet_config_is_the_probe_recipe():
    params = _load("mpnet-v2").params
    assert params["base_model"] == "all-mpnet-base-v2"
    assert (params["max_length"], params["prompt_tokens"], params["lr"], params["batch_size"]) == (
        128,
        32,
        3e-5,
        16,
    )
    assert (
        params["epochs"] == 1
        and params["threshold_strategy"] == "source_balanced"
        and params["checkpoint_dir"]
    )


def test_cascade_members_are_other_configs_outputs():
    cascade = _load("cascade-v2")
    outputs = {_load(p.stem.removeprefix("detector-")).output: p.stem for p in CONFIGS}
    assert outputs[cascade.params["fast"]] == "detector-encoder-v2-fast"
    assert outputs[cascade.params["strong"]] == "detector-mpnet-v2"
    assert 0 < cascade.params["escalation_rate"] < 1
    cascade = _load("cascade-v4")
    assert outputs[cascade.params["fast"]] == "detector-encoder-v4-fast"
    assert outputs[cascade.params["strong"]] == "detector-mpnet-v4"
    assert cascade.params == {
        **_load("cascade-v2").params,
        **{k: cascade.params[k] for k in ("fast", "strong")},
    }


def test_the_demo_trains_the_v4_fast_recipe():
    from seawall.detect.demo import demo_config

    config = TrainConfig.from_yaml(ROOT / "configs" / "detector-encoder-v4-fast.yaml")
    demo = demo_config("unused")
    assert demo.data == config.data
    assert {k: v for k, v in config.params.items() if k in demo.params} == demo.params


def test_ensemble_members_are_the_demo_encoder_and_a_default_probe():
    """The ensemble's encoder member is encoder-v4-fast's recipe (its own checkpoint folder); the probe's settings
    are the backend's defaults, fixed before any measurement."""
    members = _load("ensemble-v4").params["members"]
    assert [m["backend"] for m in members] == ["encoder", "probe"]
    encoder = _load("encoder-v4-fast").params
    assert members[0]["params"] == {**encoder, "checkpoint_dir": members[0]["params"]["checkpoint_dir"]}
    assert members[0]["params"]["checkpoint_dir"] != encoder["checkpoint_dir"]
    defaults = make_detector("probe").get_params()
    assert all(defaults[k] == v for k, v in members[1]["params"].items() if k != "threshold_strategy")
    fast = _load("ensemble-v4-fast").params["members"]
    assert fast[1]["params"] == {**members[1]["params"], "base_model": "all-minilm-l6-v2"}
    assert fast[0]["params"] == {
        **members[0]["params"],
        "checkpoint_dir": fast[0]["params"]["checkpoint_dir"],
    }
    assert fast[0]["params"]["checkpoint_dir"] != members[0]["params"]["checkpoint_dir"]
