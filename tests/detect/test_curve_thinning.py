"""ROC and PR curves are thinned for the report JSON; x and y must keep the same points."""

from __future__ import annotations

import numpy as np

from seawall.detect.metrics import _thin, evaluate_scores


def test_thinned_x_and_y_keep_the_same_length():
    # 836 points, step 2: the slice keeps index 834, so the last point (835) is appended. A y curve whose values at
    # 834 and 835 are equal (tpr reaching 1.0 early) used to skip that append by comparing values, and lost a point.
    x, y = np.linspace(0, 1, 836), np.r_[np.linspace(0, 0.999, 834), 1.0, 1.0]
    assert len(_thin(x)) == len(_thin(y)) == 419
    assert _thin(x)[-1] == 1.0 and _thin(y)[-1] == 1.0
    assert len(_thin(np.arange(835.0))) == 418  # index 834 is already the last: nothing appended


def test_report_curves_have_matching_lengths_on_many_distinct_scores():
    rng = np.random.default_rng(0)
    for n in (900, 1667, 2501):
        y = rng.integers(0, 2, n)
        p = np.clip(y * 0.3 + rng.random(n) * 0.7, 0, 1)
        curves = evaluate_scores(y, p, 0.5, n_boot=0)["curves"]
        assert len(curves["roc"]["fpr"]) == len(curves["roc"]["tpr"])
        assert len(curves["pr"]["precision"]) == len(curves["pr"]["recall"])
