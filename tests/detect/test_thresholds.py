"""Operating thresholds: accuracy-optimal and source-balanced choices on a mixed dev set."""

from __future__ import annotations

import numpy as np
import pytest

from seawall.detect.calibration import choose_thresholds
from seawall.errors import SeawallError


def _two_sources() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # A large source whose classes overlap around 0.35, and a small one whose unsafe rows all score 0.15–0.25:
    # the pooled dev set prefers ~0.35, which calls every unsafe row of the small source safe.
    rng = np.random.default_rng(0)
    p = np.concatenate(
        [
            rng.uniform(0.0, 0.4, 500),
            rng.uniform(0.3, 0.9, 500),
            rng.uniform(0.0, 0.1, 50),
            rng.uniform(0.15, 0.25, 50),
        ]
    )
    y = np.concatenate([np.zeros(500), np.ones(500), np.zeros(50), np.ones(50)]).astype(int)
    groups = np.array(["large"] * 1000 + ["small"] * 100)
    return p, y, groups


def _accuracy(p: np.ndarray, y: np.ndarray, t: float) -> float:
    return float(((p >= t) == (y == 1)).mean())


def test_accuracy_threshold_maximises_pooled_agreement() -> None:
    p, y, groups = _two_sources()
    t = choose_thresholds(p, y, groups=groups)["accuracy"]
    grid = np.linspace(0, 1, 1001)
    assert _accuracy(p, y, t) >= max(_accuracy(p, y, g) for g in grid) - 1e-9
    assert 0.3 < t < 0.4


def test_source_balanced_threshold_serves_the_small_source() -> None:
    p, y, groups = _two_sources()
    thresholds = choose_thresholds(p, y, groups=groups)
    t = thresholds["source_balanced"]
    small = groups == "small"
    large = ~small
    mean_at = lambda x: (_accuracy(p[small], y[small], x) + _accuracy(p[large], y[large], x)) / 2  # noqa: E731
    assert mean_at(t) > mean_at(thresholds["accuracy"]) + 0.1
    assert _accuracy(p[small], y[small], t) > 0.95


def test_source_balanced_needs_matching_groups() -> None:
    p, y, groups = _two_sources()
    assert "source_balanced" not in choose_thresholds(p, y)
    with pytest.raises(SeawallError, match="source names for"):
        choose_thresholds(p, y, groups=groups[:10])


def test_calibrate_offers_the_source_balanced_operating_point(sb_split) -> None:
    from seawall.detect import make_detector

    detector = make_detector("tfidf", threshold_strategy="source_balanced")
    detector.fit(sb_split["train"][:600], dev=sb_split["dev"])
    assert "source_balanced" in detector.thresholds_
    assert detector.threshold_ == detector.thresholds_["source_balanced"]
