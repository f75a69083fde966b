"""The `probe` backend (frozen embeddings + logistic regression) and the `ensemble` backend (mean log-odds margin),
on real SecureBreak rows and a tiny random BERT."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from sklearn.base import clone

from seawall.detect import load_detector, make_detector
from seawall.detect import probe as probe_module
from seawall.detect.members import logit
from seawall.detect.pipeline import evaluate_detector
from seawall.errors import ModelError, SeawallError


@pytest.fixture(scope="module")
def data(sb_split, balanced):
    return {
        "train": balanced(sb_split["train"], 200),
        "dev": balanced(sb_split["dev"], 120),
        "test": balanced(sb_split["test"], 80),
    }


def _probe_params(model_dir):
    return {
        "base_model": str(model_dir),
        "prompt_max_length": 16,
        "response_max_length": 32,
        "batch_size": 16,
    }


@pytest.fixture(scope="module")
def probe(tiny_bert_dir, data):
    return make_detector("probe", **_probe_params(tiny_bert_dir)).fit(data["train"], dev=data["dev"])


def test_probe_features_are_the_pair_features_of_normalised_embeddings(probe, data):
    pairs = [(r.prompt, r.response) for r in data["test"][:5]]
    x = probe.features(pairs)
    hidden = probe._encoder().config.hidden_size
    assert x.shape == (5, 4 * hidden)
    p, r = x[:, :hidden], x[:, hidden : 2 * hidden]
    assert np.allclose(np.linalg.norm(p, axis=1), 1, atol=1e-3) and np.allclose(
        np.linalg.norm(r, axis=1), 1, atol=1e-3
    )
    assert np.allclose(x[:, 2 * hidden : 3 * hidden], p * r) and np.allclose(
        x[:, 3 * hidden :], np.abs(p - r)
    )
    # A different prompt changes the prompt block only.
    other = probe.features([("something else entirely", pairs[0][1])])
    assert not np.allclose(other[0, :hidden], p[0]) and np.allclose(other[0, hidden : 2 * hidden], r[0])


def test_probe_learns_and_round_trips(tmp_path, probe, data):
    assert probe.training_["probe"]["features"] == 4 * 32
    # Linear in the features: the raw score is the logistic of the stored coefficients.
    pairs = [(r.prompt, r.response) for r in data["test"]]
    z = probe.features(pairs).astype(np.float64) @ probe.coef_ + probe.intercept_
    assert np.allclose(probe.raw_score(pairs), 1 / (1 + np.exp(-z)))
    train_pairs = [(r.prompt, r.response) for r in data["train"]]
    y = np.array([r.y for r in data["train"]])
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y, probe.raw_score(train_pairs)) > 0.8  # it fits its training rows
    saved = probe.save(tmp_path / "probe")
    assert not (saved / "model").exists()  # coefficients only: the base model is referenced, not copied
    config = json.loads((saved / "detector.json").read_text())
    assert config["state"]["base_fingerprint"]["sha256"] == probe.base_fingerprint_["sha256"]
    back = load_detector(saved)
    assert back.detector_id == probe.detector_id
    assert np.allclose(back.score_unsafe(pairs), probe.score_unsafe(pairs), atol=1e-6)


def test_probe_refuses_a_base_model_with_other_weights(tmp_path, probe, tiny_bert_dir):
    from safetensors.torch import load_file, save_file

    saved = probe.save(tmp_path / "probe")
    changed = tmp_path / "changed-bert"
    shutil.copytree(tiny_bert_dir, changed)
    weights = next(changed.glob("*.safetensors"))
    tensors = load_file(str(weights))
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, str(weights), metadata={"format": "pt"})
    config = json.loads((saved / "detector.json").read_text())
    config["params"]["base_model"] = str(changed)
    (saved / "detector.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="not the one this probe was fitted on"):
        load_detector(saved).score_unsafe([("a", "b")])


def test_probe_embeds_each_text_once_per_process(probe, data, monkeypatch):
    texts = [r.response for r in data["test"][:10]]
    first = probe.embed(texts, 32)
    calls = []
    model = probe._encoder()
    original = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    again = probe.embed([*texts, "a text never seen"], 32)
    assert np.array_equal(again[:10], first) and len(calls) == 1  # only the new text went through the model
    monkeypatch.setattr(probe_module, "CACHE_ENTRIES", 3)
    probe.embed(["one", "two", "three", "four"], 32)
    assert len(probe_module._CACHE) == 3  # bounded: the oldest entries go first


@pytest.fixture(scope="module")
def ensemble(tiny_bert_dir, data, tmp_path_factory):
    tfidf = make_detector("tfidf", use_prompt=False, C=0.25).fit(data["train"], dev=data["dev"])
    folder = tfidf.save(tmp_path_factory.mktemp("members") / "tfidf")
    members = [str(folder), {"backend": "probe", "params": _probe_params(tiny_bert_dir)}]
    return make_detector("ensemble", members=members, weights=[1.0, 3.0]).fit(data["train"], dev=data["dev"])


def test_ensemble_score_is_the_weighted_mean_margin(ensemble, data):
    pairs = [(r.prompt, r.response) for r in data["test"]]
    first, second = ensemble.members_
    margins = [logit(m.score_unsafe(pairs)) - logit(m.threshold_) for m in (first, second)]
    expected = 1 / (1 + np.exp(-(1.0 * margins[0] + 3.0 * margins[1]) / 4.0))
    assert np.allclose(ensemble.raw_score(pairs), expected)
    # Default calibration "none" and threshold 0.5: unsafe exactly when the weighted margins sum above zero.
    assert ensemble.threshold_ == 0.5
    assert np.array_equal(ensemble.predict(pairs), (margins[0] + 3 * margins[1] >= 0).astype(int))
    assert ensemble.training_["ensemble"]["members"][0]["from"] == "folder"
    assert ensemble.training_["ensemble"]["members"][1]["from"] == "config"
    assert ensemble.category_model_ is first.category_model_


def test_ensemble_report_sets_each_member_beside_it(ensemble, data):
    report = evaluate_detector(ensemble, data["test"], "securebreak:test", n_boot=50)
    assert set(report["members"]) == {"member-0", "member-1"}
    pairs = [(r.prompt, r.response) for r in data["test"]]
    y = np.array([r.y for r in data["test"]])
    for name, member in zip(("member-0", "member-1"), ensemble.members_, strict=True):
        entry = report["members"][name]
        assert entry["backend"] == member.backend and entry["n"] == len(y)
        flagged = member.predict(pairs).mean()
        assert entry["metrics"]["flag_rate"] == pytest.approx(flagged)
    assert report["metrics"]["flag_rate"] == pytest.approx(ensemble.predict(pairs).mean())


def test_ensemble_round_trips_without_its_member_folders(tmp_path, ensemble, data):
    saved = ensemble.save(tmp_path / "ensemble")
    assert (saved / "member-0" / "detector.json").is_file() and (
        saved / "member-1" / "detector.json"
    ).is_file()
    back = load_detector(saved)
    pairs = [(r.prompt, r.response) for r in data["test"]]
    assert back.detector_id == ensemble.detector_id
    assert np.allclose(back.score_unsafe(pairs), ensemble.score_unsafe(pairs), atol=1e-6)
    assert clone(ensemble).get_params() == ensemble.get_params()


def test_ensemble_mistakes_are_named(data, tiny_bert_dir):
    with pytest.raises(SeawallError, match="at least two members"):
        make_detector("ensemble", members=[{"backend": "tfidf"}]).fit(data["train"], dev=data["dev"])
    with pytest.raises(SeawallError, match="2 weights for 3 members"):
        make_detector("ensemble", members=[{"backend": "tfidf"}] * 3, weights=[1, 1]).fit(data["train"])
    with pytest.raises(SeawallError, match="weights must be finite"):
        make_detector("ensemble", members=[{"backend": "tfidf"}] * 2, weights=[1, -1]).fit(data["train"])
    with pytest.raises(SeawallError, match="member 'member-1': unknown keys"):
        make_detector("ensemble", members=[{"backend": "tfidf"}, {"backend": "tfidf", "C": 1}]).fit(
            data["train"]
        )


def test_training_run_and_results_page(tmp_path, tiny_bert_dir):
    """A run config trains an ensemble (a tfidf and a probe member), evaluates it, and the results page sets each
    member alone beside it."""
    from seawall.detect.pipeline import TrainConfig, run_training
    from seawall.detect.report import build_report

    config = TrainConfig(
        name="ensemble-test",
        backend="ensemble",
        params={
            "members": [
                {"backend": "tfidf", "params": {"category_model": False}},
                {"backend": "probe", "params": {**_probe_params(tiny_bert_dir), "category_model": False}},
            ],
            "category_model": False,
        },
        data={"sets": ["securebreak"], "max_train_rows": {"securebreak": 300}},
        output=str(tmp_path / "runs" / "ensemble"),
        report_dir=str(tmp_path / "results" / "ensemble-test"),
        eval_sets=["securebreak:test"],
        n_boot=0,
    )
    summary = run_training(config)
    entry = summary["eval"]["securebreak:test"]
    assert summary["training"]["ensemble"]["weights"] == [1.0, 1.0]
    page = build_report(tmp_path / "results")
    assert "Ensemble against each member alone" in page
    for name, backend in (("member-0", "tfidf"), ("member-1", "probe")):
        member = entry["members"][name]
        speed = f"{member['responses_per_s']:,.1f}"
        accuracy = f"{member['metrics']['accuracy']:.3f}"
        assert f"| securebreak:test | {name} alone ({backend}) | {speed} | {accuracy} |" in page
    speed = f"{entry['n'] / entry['scoring_seconds']:,.1f}"
    assert f"| securebreak:test | **ensemble** | {speed} | {entry['metrics']['accuracy']:.3f} |" in page
