"""The cascade backend: band choice on dev, routing, scores and decisions of the members, save/load, reports."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.base import clone

from seawall.detect import load_detector, make_detector
from seawall.detect.cascade import band_halfwidth
from seawall.detect.members import recentre
from seawall.detect.pipeline import TrainConfig, evaluate_detector, run_training
from seawall.detect.report import build_report
from seawall.errors import ModelError, SeawallError


@pytest.fixture(scope="module")
def data(sb_split, balanced):
    return {
        "train": balanced(sb_split["train"], 48),
        "dev": balanced(sb_split["dev"], 160),
        "test": balanced(sb_split["test"], 120),
    }


@pytest.fixture(scope="module")
def fast_folder(tmp_path_factory, sb_split):
    """A weak fast member (response words only, strong regularisation) saved as a detector folder."""
    fast = make_detector("tfidf", use_prompt=False, C=0.25).fit(sb_split["train"], dev=sb_split["dev"])
    return fast.save(tmp_path_factory.mktemp("members") / "fast")


@pytest.fixture(scope="module")
def cascade(fast_folder, tiny_bert_dir, data):
    """Fast: the saved TF-IDF folder (only the band is fitted); strong: a tiny random BERT encoder, fitted here."""
    strong = {
        "backend": "encoder",
        "params": {"base_model": str(tiny_bert_dir), "max_length": 48, "prompt_tokens": 8, "epochs": 1},
    }
    return make_detector("cascade", fast=str(fast_folder), strong=strong, escalation_rate=0.25).fit(
        data["train"], dev=data["dev"]
    )


def test_band_halfwidth_counts_rows_and_keeps_ties_together():
    distance = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    width = band_halfwidth(distance, 0.3)
    assert int((distance < width).sum()) == 3 and 0.3 < width < 0.4
    assert band_halfwidth(distance, 0.0) == 0.0 and not (distance < 0.0).any()
    assert band_halfwidth(distance, 1.0) == float("inf")
    # A binary fast member puts every row at one distance: all or nothing, and 30% is nearer nothing.
    tied = np.full(10, 13.8)
    assert band_halfwidth(tied, 0.3) == 0.0 and band_halfwidth(tied, 0.7) == float("inf")
    # 4 ties + 6 others at a target of 5 rows: 4 (one away) beats 10.
    mixed = np.array([0.1] * 4 + [0.5] * 6)
    assert int((mixed < band_halfwidth(mixed, 0.5)).sum()) == 4
    # Target 1 row of [a, a, b, b]: 0 and 2 rows are equally near; the smaller (cheaper) band wins.
    pairs = np.array([0.1, 0.1, 0.5, 0.5])
    assert band_halfwidth(pairs, 0.25) == 0.0
    assert int((pairs < band_halfwidth(pairs, 0.3)).sum()) == 2


def test_recentre_moves_the_threshold_to_one_half():
    p = np.array([0.05, 0.2, 0.3, 0.31, 0.9])
    q = recentre(p, 0.3)
    assert q[2] == pytest.approx(0.5)
    assert np.all(np.diff(q) > 0)  # same ranking
    assert ((q >= 0.5) == (p >= 0.3)).all()


def test_band_hits_the_target_rate_on_dev(cascade, data):
    info = cascade.training_["cascade"]
    n_dev = len(data["dev"])
    assert info["dev"]["n"] == n_dev
    assert info["dev"]["n_escalated"] == round(0.25 * n_dev)  # TF-IDF scores are continuous: no ties
    assert info["members"]["fast"]["from"] == "folder" and info["members"]["strong"]["from"] == "config"
    assert info["members"]["strong"]["backend"] == "encoder"
    band = info["band"]
    assert band["low"] < band["fast_threshold"] < band["high"]
    # Recomputed from the fast member alone: the rows inside (low, high) are the escalated quarter.
    fast = cascade.members_["fast"]
    p = fast.score_unsafe(data["dev"])
    assert int(((p > band["low"]) & (p < band["high"])).sum()) == info["dev"]["n_escalated"]


def test_escalated_rows_get_the_strong_members_score_and_decision(cascade, data):
    fast, strong = cascade.members_["fast"], cascade.members_["strong"]
    pairs = [(r.prompt, r.response) for r in data["test"]]
    p, escalated = cascade.score_routed(pairs)
    band = cascade.training_["cascade"]["band"]
    p_fast = fast.score_unsafe(pairs)
    assert (escalated == ((p_fast > band["low"]) & (p_fast < band["high"]))).all()
    assert 0 < escalated.sum() < len(pairs)
    hard = [pair for pair, e in zip(pairs, escalated, strict=True) if e]
    easy = [pair for pair, e in zip(pairs, escalated, strict=True) if not e]
    assert np.allclose(p[escalated], recentre(strong.score_unsafe(hard), strong.threshold_))
    assert np.allclose(p[~escalated], recentre(p_fast[~escalated], fast.threshold_))
    assert np.allclose(cascade.score_unsafe(pairs), p)
    # Decisions: the cascade's threshold is 0.5, where each member's own threshold was moved.
    assert cascade.threshold_ == 0.5
    decision = cascade.predict(pairs)
    assert (decision[escalated] == strong.predict(hard)).all()
    assert (decision[~escalated] == fast.predict(easy)).all()
    # Categories: the fast member's model, given only to the pairs the cascade flags.
    categories = cascade.predict_category(pairs)
    assert all(c is None for c, d in zip(categories, decision, strict=True) if d == 0)
    assert cascade.category_labels == fast.category_labels


def test_save_load_round_trip(tmp_path, cascade, data):
    folder = cascade.save(tmp_path / "cascade")
    assert sorted(p.name for p in folder.iterdir()) == [
        "arrays.safetensors",
        "detector.json",
        "fast",
        "strong",
    ]
    assert (folder / "strong" / "model" / "model.safetensors").is_file()
    assert not list(folder.rglob("*.pkl")) and not list(folder.rglob("*.bin"))
    config = json.loads((folder / "detector.json").read_text())
    assert config["backend"] == "cascade" and config["state"]["members"] == ["fast", "strong"]
    assert config["state"]["band"] == cascade.band
    loaded = load_detector(folder)
    assert loaded.detector_id == cascade.detector_id
    p, escalated = cascade.score_routed(data["test"])
    p2, escalated2 = loaded.score_routed(data["test"])
    assert (escalated == escalated2).all() and np.allclose(p, p2, atol=1e-6)
    assert loaded.predict_category(data["test"]) == cascade.predict_category(data["test"])


def test_evaluation_reports_routing(cascade, data):
    report = evaluate_detector(cascade, data["test"], "securebreak:test", n_boot=0)
    routing = report["routing"]
    assert routing["n"] == report["n"] == len(data["test"])
    assert routing["rows_per_member"]["fast"] + routing["rows_per_member"]["strong"] == routing["n"]
    _, escalated = cascade.score_routed(data["test"])
    assert routing["n_escalated"] == int(escalated.sum())
    assert routing["escalation_rate"] == pytest.approx(escalated.mean())
    y = np.array([r.y for r in data["test"]])
    decision = cascade.predict(data["test"])
    assert routing["accuracy_per_member"]["strong"] == pytest.approx(
        np.mean(decision[escalated] == y[escalated])
    )
    assert routing["accuracy"] == pytest.approx(report["metrics"]["accuracy"])
    # The rate over the whole set (the seconds are stored rounded to 1 ms, hence the tolerance on a fast pass).
    assert routing["scoring_seconds"] == report["scoring_seconds"] > 0
    assert routing["responses_per_s"] == pytest.approx(routing["n"] / report["scoring_seconds"], rel=0.05)


def test_evaluation_sets_each_member_alone_beside_the_cascade(cascade, data):
    """The members' own metrics on the same rows, at their own thresholds, with their speed and escalation rate."""
    report = evaluate_detector(cascade, data["test"], "securebreak:test", n_boot=50)
    members = report["members"]
    assert set(members) == {"fast", "strong"}
    y = np.array([r.y for r in data["test"]])
    for name, rate in (("fast", 0.0), ("strong", 1.0)):
        member, entry = cascade.members_[name], members[name]
        assert entry["n"] == len(y) and entry["escalation_rate"] == rate
        assert entry["detector_id"] == member.detector_id and entry["threshold"] == member.threshold_
        decision = member.predict(data["test"])
        assert entry["metrics"]["accuracy"] == pytest.approx(np.mean(decision == y))
        assert entry["responses_per_s"] > 0 and entry["scoring_seconds"] > 0
        assert entry["ci95"]["accuracy"][0] <= entry["metrics"]["accuracy"] <= entry["ci95"]["accuracy"][1]
    # The members are really different detectors here, so the three rows could disagree.
    assert members["fast"]["metrics"] != members["strong"]["metrics"]
    # The cascade's accuracy is the members' accuracies on their own rows, weighted by the rows they scored.
    routing = report["routing"]
    kept, escalated = routing["rows_per_member"]["fast"], routing["rows_per_member"]["strong"]
    per_member = routing["accuracy_per_member"]
    mixed = (kept * per_member["fast"] + escalated * per_member["strong"]) / routing["n"]
    assert report["metrics"]["accuracy"] == pytest.approx(mixed)
    with pytest.raises(SeawallError, match="3 labels for 120 pairs"):
        cascade.evaluate_members(data["test"], y[:3], n_boot=0)


def test_a_plain_detector_report_has_no_members(data, fast_folder):
    report = evaluate_detector(load_detector(fast_folder), data["test"], "securebreak:test", n_boot=0)
    assert "members" not in report and "routing" not in report


def _tfidf_cascade(rate: float, **strong_params):
    return make_detector(
        "cascade",
        fast={"backend": "tfidf", "params": {"use_prompt": False, "C": 0.25, "category_model": False}},
        strong={"backend": "tfidf", "params": {"category_model": False, **strong_params}},
        escalation_rate=rate,
    )


def test_rates_zero_and_one_are_the_members(tmp_path, sb_split, data):
    train, dev = sb_split["train"], data["dev"]
    none = _tfidf_cascade(0.0).fit(train, dev=dev)
    every = _tfidf_cascade(1.0).fit(train, dev=dev)
    fast, strong = none.members_["fast"], every.members_["strong"]
    assert (none.predict(data["test"]) == fast.predict(data["test"])).all()
    assert (every.predict(data["test"]) == strong.predict(data["test"])).all()
    assert (
        every.band["logit_halfwidth"] is None and every.training_["cascade"]["dev"]["escalation_rate"] == 1.0
    )
    assert none.training_["cascade"]["dev"]["n_escalated"] == 0
    assert none.category_model_ is None  # the fast member has none to share
    # The unbounded band of "escalate everything" survives JSON.
    loaded = load_detector(every.save(tmp_path / "every"))
    assert loaded.band["logit_halfwidth"] is None
    assert (loaded.predict(data["test"]) == strong.predict(data["test"])).all()


def test_sklearn_clone_and_params():
    det = _tfidf_cascade(0.3, C=2.0)
    params = det.get_params()
    assert params["escalation_rate"] == 0.3 and params["strong"]["params"]["C"] == 2.0
    assert clone(det).get_params() == params


def test_user_mistakes_are_named(tmp_path, sb_split, data):
    with pytest.raises(SeawallError, match="dev"):
        _tfidf_cascade(0.2).fit(sb_split["train"])
    with pytest.raises(SeawallError, match="escalation_rate"):
        _tfidf_cascade(1.5).fit(sb_split["train"], dev=data["dev"])
    with pytest.raises(SeawallError, match="'fast'"):
        make_detector("cascade", strong={"backend": "tfidf"}).fit(sb_split["train"], dev=data["dev"])
    with pytest.raises(SeawallError, match="unknown keys"):
        make_detector("cascade", fast={"backend": "tfidf", "parms": {}}, strong={"backend": "tfidf"}).fit(
            sb_split["train"], dev=data["dev"]
        )
    with pytest.raises(ModelError, match="no-such-folder"):
        make_detector("cascade", fast=str(tmp_path / "no-such-folder"), strong={"backend": "tfidf"}).fit(
            sb_split["train"], dev=data["dev"]
        )


def test_training_run_and_results_page(tmp_path, fast_folder):
    """A YAML-style run config trains a cascade, evaluates it, and the results page shows its routing."""
    config = TrainConfig(
        name="cascade-test",
        backend="cascade",
        params={
            "fast": str(fast_folder),
            "strong": {"backend": "tfidf", "params": {"category_model": False}},
            "escalation_rate": 0.2,
        },
        data={"sets": ["securebreak"]},
        output=str(tmp_path / "runs" / "cascade"),
        report_dir=str(tmp_path / "results" / "cascade-test"),
        eval_sets=["securebreak:test"],
        n_boot=0,
    )
    summary = run_training(config)
    routing = summary["eval"]["securebreak:test"]["routing"]
    assert routing["rows_per_member"]["strong"] == routing["n_escalated"] > 0
    assert summary["training"]["cascade"]["escalation_rate_target"] == 0.2
    page = build_report(tmp_path / "results")
    assert "Escalation band on the fast member's P(unsafe)" in page
    rate = f"{routing['escalation_rate']:.3f}"
    assert f"| securebreak:test | {routing['n']} | {rate} |" in page
    # Beside the cascade, each member alone on the same rows: escalation rate, responses/s, quality.
    members = summary["eval"]["securebreak:test"]["members"]
    assert "Cascade against each member alone" in page
    for label, entry in (("fast alone", members["fast"]), ("strong alone", members["strong"])):
        speed = f"{entry['responses_per_s']:,.1f}"
        accuracy = f"{entry['metrics']['accuracy']:.3f}"
        assert (
            f"| securebreak:test | {label} | {entry['escalation_rate']:.3f} | {speed} | {accuracy} |" in page
        )
    speed = f"{routing['responses_per_s']:,.1f}"
    accuracy = f"{summary['eval']['securebreak:test']['metrics']['accuracy']:.3f}"
    assert f"| securebreak:test | **cascade** | {rate} | {speed} | {accuracy} |" in page


def test_two_saved_members_fit_only_the_band(tmp_path, fast_folder, sb_split, data):
    strong = make_detector("tfidf", category_model=False).fit(sb_split["train"], dev=sb_split["dev"])
    strong_folder = strong.save(tmp_path / "strong")
    cascade = make_detector("cascade", fast=str(fast_folder), strong=str(strong_folder), escalation_rate=0.5)
    cascade.fit([], dev=data["dev"])  # no training rows: nothing but the band is learned
    members = cascade.training_["cascade"]["members"]
    assert members["strong"]["detector_id"] == strong.detector_id
    assert {m["from"] for m in members.values()} == {"folder"}
    assert cascade.training_["cascade"]["dev"]["n_escalated"] == round(0.5 * len(data["dev"]))
    _, escalated = cascade.score_routed(data["test"])
    decision = cascade.predict(data["test"])
    hard = [r for r, e in zip(data["test"], escalated, strict=True) if e]
    assert (decision[escalated] == strong.predict(hard)).all()
