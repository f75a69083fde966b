"""Contract, refusal/tfidf backends on real SecureBreak, calibration, metrics, data parsing, bad inputs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import average_precision_score, f1_score, roc_auc_score

from seawall.data.records import ResponseRecord
from seawall.detect import as_pairs, is_refusal, load_detector, make_detector
from seawall.detect.calibration import (
    apply_calibrator,
    choose_thresholds,
    expected_calibration_error,
    fit_calibrator,
)
from seawall.detect.data import parse_label, row_to_record
from seawall.detect.metrics import _auroc, _average_precision, bootstrap_ci, evaluate_scores, point_metrics
from seawall.errors import DataError, ModelError, SeawallError


# ---- refusal -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I\u2019m sorry, but I can\u2019t help with that.",  # curly apostrophes
        "Ｉ ｃａｎｎｏｔ help with that",  # full-width letters (NFKC)
        "I\u3000CANNOT   do\nthat",  # ideographic space, case, runs of whitespace
        "  As an AI language model, I cannot provide instructions.",
        "",
        "   \n\t ",
    ],
)
def test_is_refusal_normalises(text):
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "Sure, here is how to do it: first, gather the materials.",
        "Step 1: Identify your target audience. This is illegal, but here is the plan.",
        "x" * 500 + " I cannot guarantee it works.",  # a late hedge after a long compliant answer
    ],
)
def test_is_refusal_compliant(text):
    assert not is_refusal(text)


def test_refusal_detector_on_securebreak(sb_split):
    det = make_detector("refusal")
    test = sb_split["test"]
    pred = det.predict(test)
    y = np.array([r.y for r in test])
    # a refusal judge: responses it calls refusals are much less often unsafe than the ones it calls compliant
    assert y[pred == 0].mean() < y[pred == 1].mean()
    assert det.predict([("q", "")])[0] == 0  # empty response = refusal = safe


# ---- tfidf ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tfidf(sb_split):
    return make_detector("tfidf").fit(sb_split["train"], dev=sb_split["dev"])


def test_tfidf_on_securebreak(tfidf, sb_split):
    test = sb_split["test"]
    y = np.array([r.y for r in test])
    p = tfidf.predict_proba(test)
    assert p.shape == (len(test), 2) and np.allclose(p.sum(1), 1)
    assert list(tfidf.classes_) == [0, 1]
    assert roc_auc_score(y, p[:, 1]) > 0.8  # FINDINGS: ≈0.82 on a grouped split
    assert tfidf.calibrator_["method"] == "temperature"
    assert tfidf.threshold_ == tfidf.thresholds_["f1"]


def test_tfidf_save_load_without_pickle(tfidf, sb_split, tmp_path):
    folder = tfidf.save(tmp_path / "t")
    files = sorted(p.name for p in folder.iterdir())
    assert files == ["arrays.safetensors", "detector.json"]
    config = json.loads((folder / "detector.json").read_text())
    assert config["backend"] == "tfidf" and config["detector_id"].startswith("tfidf-")
    again = load_detector(folder)
    test = sb_split["test"][:200]
    assert np.allclose(again.predict_proba(test), tfidf.predict_proba(test))
    assert again.get_params() == tfidf.get_params()
    with pytest.raises(FileExistsError):
        tfidf.save(folder)


def test_sklearn_clone_and_params():
    det = make_detector("tfidf", C=0.5)
    copy = clone(det)
    assert copy.get_params()["C"] == 0.5 and not hasattr(copy, "coef_")
    with pytest.raises(SeawallError, match="bad parameters"):
        make_detector("tfidf", nonsense=1)
    with pytest.raises(SeawallError, match="known"):
        make_detector("no-such-backend")


def test_unfitted_and_single_class_errors():
    with pytest.raises(SeawallError, match="not fitted"):
        make_detector("tfidf").predict([("a", "b")])
    rows = [ResponseRecord(id=str(i), prompt="p", response="r", label="safe") for i in range(3)]
    with pytest.raises(SeawallError, match="single class"):
        make_detector("tfidf").fit(rows)


def test_load_rejects_non_detector_folders(tmp_path, tiny_bert_dir):
    with pytest.raises(ModelError, match="not a seawall detector"):
        load_detector(tiny_bert_dir)  # a plain HF model folder
    (tmp_path / "detector.json").write_text("{not json")
    with pytest.raises(ModelError, match="not valid JSON"):
        load_detector(tmp_path)


def test_as_pairs_inputs():
    record = ResponseRecord(id="1", prompt="p", response="r")
    assert as_pairs([record, ("a", "b"), {"response": "x"}, {"prompt": float("nan"), "response": None}]) == [
        ("p", "r"),
        ("a", "b"),
        ("", "x"),
        ("", ""),
    ]
    with pytest.raises(SeawallError, match="item 0"):
        as_pairs([42])
    with pytest.raises(SeawallError, match="item 0: response"):
        as_pairs([("p", 3)])


def test_tfidf_handles_huge_and_empty_responses(tfidf):
    p = tfidf.predict_proba([("q", "word " * 20_000), ("q", ""), ("", "Sure, here is how.")])
    assert p.shape == (3, 2) and np.isfinite(p).all()


# ---- calibration ---------------------------------------------------------------------------------------------------
def _synthetic(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = rng.normal(0, 1, n) + 1.5 * (2 * y - 1)
    raw = 1 / (1 + np.exp(-8 * z))  # true log-odds are 3z: these scores are over-confident
    return raw, y


def test_temperature_keeps_ranking_and_improves_calibration():
    raw, y = _synthetic()
    cal = fit_calibrator(raw, y, "temperature")
    p = apply_calibrator(cal, raw)
    assert cal["temperature"] == pytest.approx(8 / 3, rel=0.15)  # recovers the over-confidence factor
    assert roc_auc_score(y, p) == pytest.approx(roc_auc_score(y, raw))
    assert expected_calibration_error(p, y) < expected_calibration_error(raw, y)


def test_isotonic_is_monotone_and_json():
    raw, y = _synthetic()
    cal = fit_calibrator(raw, y, "isotonic")
    json.dumps(cal)
    grid = np.linspace(0, 1, 101)
    out = apply_calibrator(cal, grid)
    assert np.all(np.diff(out) >= 0) and out.min() >= 0 and out.max() <= 1
    assert expected_calibration_error(apply_calibrator(cal, raw), y) < expected_calibration_error(raw, y)
    with pytest.raises(SeawallError):
        fit_calibrator(raw, y, "platt-ish")


def test_thresholds_meet_recall_and_maximise_f1():
    raw, y = _synthetic(500, seed=3)
    t = choose_thresholds(raw, y, target_recall=0.95)
    assert ((raw >= t["recall"]) & (y == 1)).sum() / y.sum() >= 0.95
    # no higher candidate threshold also reaches the target recall
    higher = np.unique(raw[raw > t["recall"]])
    assert all(((raw >= h) & (y == 1)).sum() / y.sum() < 0.95 for h in higher[:50])
    best = max(f1_score(y, raw >= c) for c in np.unique(raw))
    assert f1_score(y, raw >= t["f1"]) == pytest.approx(best)


def test_ece_hand_computed():
    p = np.array([0.05, 0.05, 0.95, 0.95])
    y = np.array([0, 1, 1, 1])
    # bin [0,0.1): mean p 0.05, frac 0.5 → 0.45 × 0.5; bin [0.9,1]: 0.95 vs 1 → 0.05 × 0.5
    assert expected_calibration_error(p, y) == pytest.approx(0.25)


# ---- metrics -------------------------------------------------------------------------------------------------------
def test_point_metrics_hand_computed():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    p = np.array([0.9, 0.8, 0.3, 0.6, 0.2, 0.1, 0.4, 0.7])
    m = point_metrics(y, p, 0.5)
    # predicted unsafe: 0.9, 0.8, 0.6, 0.7 → tp 3, fp 1, fn 1, tn 3
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(3 / 4)
    assert m["fpr"] == pytest.approx(1 / 4) and m["fnr"] == pytest.approx(1 / 4)
    # AUROC by pair counting: positives (0.9, 0.8, 0.3, 0.7) vs negatives (0.6, 0.2, 0.1, 0.4): 4+4+4+2 = 14 of 16 pairs
    assert m["auroc"] == pytest.approx(14 / 16)
    assert _auroc(y, p) == pytest.approx(14 / 16)
    assert _average_precision(y, p) == pytest.approx(average_precision_score(y, p))


def test_average_precision_with_ties_matches_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 300)
    p = np.round(rng.random(300), 1)
    assert _average_precision(y, p) == pytest.approx(average_precision_score(y, p))


def test_bootstrap_and_report():
    raw, y = _synthetic(400)
    ci = bootstrap_ci(y, raw, 0.5, n_boot=200)
    m = point_metrics(y, raw, 0.5)
    for key in ("f1", "auroc", "accuracy"):
        assert ci[key][0] <= m[key] <= ci[key][1]
    report = evaluate_scores(y, raw, 0.5, categories=["a", "b"] * 200, n_boot=50)
    assert sum(report["confusion"].values()) == 400
    assert [r["category"] for r in report["per_category"]] == ["a", "b"]
    assert sum(r["n"] for r in report["per_category"]) == 400


def test_metrics_single_class_is_nan_not_crash():
    m = point_metrics(np.zeros(5, dtype=int), np.linspace(0, 1, 5), 0.5)
    assert math.isnan(m["auroc"]) and m["fpr"] == pytest.approx(3 / 5)  # 0.5, 0.75, 1.0 flagged


# ---- data parsing --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("value", "label"),
    [
        (1, "unsafe"),
        ("0", "safe"),
        (True, "unsafe"),
        ("Unsafe", "unsafe"),
        (float("nan"), "unknown"),
        (None, "unknown"),
        ("", "unknown"),
        (1.0, "unsafe"),
    ],
)
def test_parse_label(value, label):
    assert parse_label(value) == label


def test_row_to_record_bad_rows():
    assert row_to_record({"response": "r"}, "x").prompt == ""
    assert row_to_record({"response": "r", "label": float("nan")}, "x").label == "unknown"
    with pytest.raises(DataError, match="missing 'response'"):
        row_to_record({"prompt": "p"}, "x")
    with pytest.raises(DataError, match="not one of"):
        row_to_record({"response": "r", "label": "maybe"}, "x")
    with pytest.raises(DataError, match="JSON object"):
        row_to_record([1, 2], "x")
