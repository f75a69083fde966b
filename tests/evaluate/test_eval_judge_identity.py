"""The judge's detector_id keys every cached measurement, so it must change whenever the judge's verdicts can."""

from __future__ import annotations

import dataclasses
import random

import pytest

from seawall.data import canonical_split
from seawall.detect import load_detector, make_detector


@pytest.fixture(scope="module")
def securebreak(shared_data):
    splits = canonical_split("securebreak", data_dir=str(shared_data))
    return splits["train"][:600], splits["dev"]


def _shuffled_responses(records, seed):
    """The same rows and labels with responses swapped among rows of the same label: other weights, same counts."""
    rng = random.Random(seed)
    out = list(records)
    for label in ("safe", "unsafe"):
        index = [i for i, r in enumerate(records) if r.label == label]
        responses = [records[i].response for i in index]
        rng.shuffle(responses)
        for i, response in zip(index, responses, strict=True):
            out[i] = dataclasses.replace(records[i], response=response)
    return out


def test_equal_params_and_counts_but_different_weights_give_different_ids(securebreak):
    train, _ = securebreak
    first = make_detector("tfidf", category_model=False).fit(train)
    second = make_detector("tfidf", category_model=False).fit(_shuffled_responses(train, seed=1))
    assert first.get_params() == second.get_params() and first.training_ == second.training_
    assert (first.coef_ != second.coef_).any()
    assert first.detector_id != second.detector_id
    assert make_detector("tfidf", category_model=False).fit(train).detector_id == first.detector_id


def test_calibrate_and_the_operating_point_refresh_the_id(securebreak, tmp_path):
    train, dev = securebreak
    detector = make_detector("tfidf", category_model=False).fit(train)
    fitted = detector.detector_id
    detector.calibrate(dev)
    calibrated = detector.detector_id
    assert calibrated != fitted
    detector.save(tmp_path / "det")
    loaded = load_detector(tmp_path / "det")
    assert loaded.detector_id == calibrated
    # The loaded state hashes like the fitted one: the same operating point gives back the same id.
    loaded.set_operating_point(detector.threshold_strategy)
    assert loaded.detector_id == calibrated
    loaded.set_operating_point("0.99")
    assert loaded.detector_id != calibrated
