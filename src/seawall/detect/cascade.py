"""`cascade`: a fast member scores every pair; the pairs it is unsure about go to a strong member.

Routing. The fast member's calibrated P(unsafe) `p` is compared with its own threshold `t` on the logit scale:
a pair escalates when |logit(p) − logit(t)| < `halfwidth`, i.e. when p falls inside the band (low, high) around t
with logit(high) − logit(t) = logit(t) − logit(low) = halfwidth. The band is chosen on dev: it holds the
`escalation_rate` · n dev rows nearest the fast member's threshold (on the logit scale), so on dev the escalation
rate is the target; rows at equal distance go in or out together, and then the achievable count nearest the
target is taken (the realised dev rate is in `training_["cascade"]`).

Scores and decisions. Each member keeps its own calibration and threshold. The cascade's raw score of a pair is
its member's calibrated P(unsafe) with the member's threshold moved to 0.5 — σ(logit(p) − logit(t)), a shift of
the prior odds that keeps the ranking — from the strong member for escalated pairs, from the fast one otherwise.
With the default `calibration="none"` and `threshold_strategy="default"` the cascade's threshold is 0.5, so its
`predict` equals the fast member's decision on kept pairs and the strong member's on escalated ones, and
everything that applies `threshold_` to `predict_proba` (the guard, `seawall detect predict`) agrees with it.

Members are saved detector folders (loaded as they are; `fit` then only chooses the band and the cascade's
category model) or configs `{"backend": …, "params": {…}}` fitted on the same train and dev records. Saved
without pickle: the members as nested detector folders `fast/` and `strong/`, the band as JSON.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seawall.data.records import ResponseRecord
from seawall.detect.base import DETECTORS, Detector, Pair, labelled, load_detector
from seawall.detect.calibration import apply_calibrator
from seawall.detect.members import is_folder_spec, logit, member_detector, member_report, recentre
from seawall.errors import SeawallError

MEMBERS = ("fast", "strong")


def band_halfwidth(distance: np.ndarray, escalation_rate: float) -> float:
    """The logit half-width w whose band (distance < w) holds the number of rows closest to rate · n.

    Rows at equal distance (a binary fast member, duplicates) go in or out together, so the achievable counts are
    0 and the cumulative counts of the distinct distances; a tie between two of them picks the smaller (cheaper).
    """
    target = escalation_rate * len(distance)
    values, counts = np.unique(np.asarray(distance, dtype=np.float64), return_counts=True)
    cumulative = np.concatenate([[0], np.cumsum(counts)])
    best = int(np.argmin(np.abs(cumulative - target)))  # argmin takes the first: the smaller band on a tie
    if best == 0:
        return 0.0
    if best == len(values):
        return float("inf")
    # Midway between the last distance in and the first one out, so neither side sits on the boundary.
    return float((values[best - 1] + values[best]) / 2)


@DETECTORS.register("cascade")
class CascadeDetector(Detector):
    """A fast member for every pair, a strong member for the pairs near the fast member's threshold."""

    backend = "cascade"

    def __init__(
        self,
        fast: str | dict[str, Any] | None = None,
        strong: str | dict[str, Any] | None = None,
        escalation_rate: float = 0.2,
        calibration: str = "none",
        threshold_strategy: str = "default",
        target_recall: float = 0.95,
        category_model: bool = True,
        seed: int = 0,
    ) -> None:
        self.fast = fast
        self.strong = strong
        self.escalation_rate = escalation_rate
        self.calibration = calibration
        self.threshold_strategy = threshold_strategy
        self.target_recall = target_recall
        self.category_model = category_model
        self.seed = seed

    # ---- fitting -------------------------------------------------------------------------------------------------
    def fit(self, records: Sequence[ResponseRecord], dev: Sequence[ResponseRecord] | None = None) -> Detector:
        """Load or fit both members, choose the band on `dev` (required), then calibrate as every detector does."""
        if not 0.0 <= float(self.escalation_rate) <= 1.0:
            raise SeawallError(f"cascade: escalation_rate must be in [0, 1], got {self.escalation_rate}")
        if dev is None or not labelled(dev)[0]:
            raise SeawallError(
                "cascade: fit needs labelled dev records, on which the escalation band is chosen"
            )
        self.members_ = {name: self._member(name, records, dev) for name in MEMBERS}
        return super().fit(records, dev=dev)

    def _member(
        self, name: str, records: Sequence[ResponseRecord], dev: Sequence[ResponseRecord]
    ) -> Detector:
        return member_detector("cascade", name, getattr(self, name), records, dev)

    def _needs_labels(self) -> bool:
        return False  # the members learn from the labels (a config member's own fit checks them)

    def _fit(self, pairs: list[Pair], y: np.ndarray, dev: tuple[list[Pair], np.ndarray] | None) -> None:
        dev_pairs, dev_y = dev  # fit() checked that dev is there
        fast = self.members_["fast"]
        p_fast = fast.score_unsafe(dev_pairs)
        fast_unsafe = p_fast >= fast.threshold_
        distance = np.abs(logit(p_fast) - logit(fast.threshold_))
        self.halfwidth_ = band_halfwidth(distance, float(self.escalation_rate))
        escalated = distance < self.halfwidth_
        # Only the fast member's dev scores are needed here; the strong member's accuracy on its rows is part of
        # every evaluation report (`routing`), so dev is not scored by it twice (calibration scores it once).
        self.training_["cascade"] = {
            "escalation_rate_target": float(self.escalation_rate),
            "band": self.band,
            "members": {
                name: {
                    "backend": m.backend,
                    "detector_id": m.detector_id,
                    "threshold": float(m.threshold_),
                    "from": "folder" if is_folder_spec(getattr(self, name)) else "config",
                }
                for name, m in self.members_.items()
            },
            "dev": self.routing_stats(escalated)
            | {
                "fast_accuracy_escalated": _accuracy(dev_y[escalated], fast_unsafe[escalated]),
                "fast_accuracy_kept": _accuracy(dev_y[~escalated], fast_unsafe[~escalated]),
            },
        }

    def _fit_categories(self, records: Sequence[ResponseRecord]) -> None:
        # The fast member has learned the categories already (from these records, or before it was saved): the
        # cascade shares its model instead of training a second one.
        fast = self.members_["fast"]
        self.category_model_ = fast.category_model_ if self.category_model else None
        if self.category_model_ is not None:
            self.training_["category"] = {"from": "fast member", **fast.training_.get("category", {})}

    @property
    def band(self) -> dict[str, float | None]:
        """The escalation band on the fast member's calibrated P(unsafe): low, high, its threshold, the logit
        half-width (None = unbounded: every pair escalates)."""
        t = float(self.members_["fast"].threshold_)
        w = self.halfwidth_
        if np.isinf(w):
            return {"low": 0.0, "high": 1.0, "fast_threshold": t, "logit_halfwidth": None}
        centre = float(logit(t))
        return {
            "low": float(1 / (1 + np.exp(-(centre - w)))),
            "high": float(1 / (1 + np.exp(-(centre + w)))),
            "fast_threshold": t,
            "logit_halfwidth": w,
        }

    # ---- scoring -------------------------------------------------------------------------------------------------
    def _combine(self, pairs: list[Pair], p_fast: np.ndarray, escalated: np.ndarray) -> np.ndarray:
        fast, strong = self.members_["fast"], self.members_["strong"]
        raw = recentre(p_fast, fast.threshold_)
        if escalated.any():
            hard = [pairs[i] for i in np.flatnonzero(escalated)]
            raw[escalated] = recentre(strong.score_unsafe(hard), strong.threshold_)
        return raw

    def _route(self, pairs: list[Pair]) -> tuple[np.ndarray, np.ndarray]:
        fast = self.members_["fast"]
        p_fast = fast.score_unsafe(pairs)
        escalated = np.abs(logit(p_fast) - logit(fast.threshold_)) < self.halfwidth_
        return self._combine(pairs, p_fast, escalated), escalated

    def _score(self, pairs: list[Pair]) -> np.ndarray:
        return self._route(pairs)[0]

    def score_routed(self, pairs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """(calibrated P(unsafe), escalated): the scores of `score_unsafe` and which pairs the strong member scored."""
        from seawall.detect.base import as_pairs

        self._check_fitted()
        pairs = as_pairs(pairs)
        if not pairs:
            return np.zeros(0), np.zeros(0, dtype=bool)
        raw, escalated = self._route(pairs)
        return apply_calibrator(self.calibrator_, raw), escalated

    def routing_stats(
        self,
        escalated: np.ndarray,
        y: np.ndarray | None = None,
        p: np.ndarray | None = None,
        seconds: float | None = None,
    ) -> dict[str, Any]:
        """Escalation rate and rows per member; with labels and scores also the accuracy on each member's rows;
        with the scoring time, the cascade's responses per second."""
        escalated = np.asarray(escalated, dtype=bool)
        n, k = len(escalated), int(escalated.sum())
        out: dict[str, Any] = {
            "n": n,
            "n_escalated": k,
            "escalation_rate": k / n if n else float("nan"),
            "rows_per_member": {"fast": n - k, "strong": k},
        }
        if seconds is not None:
            out["scoring_seconds"] = round(float(seconds), 3)
            out["responses_per_s"] = _rate(n, seconds)
        if y is not None and p is not None:
            unsafe = np.asarray(p) >= self.threshold_
            y = np.asarray(y)
            out["accuracy"] = _accuracy(y, unsafe)
            out["accuracy_per_member"] = {
                "fast": _accuracy(y[~escalated], unsafe[~escalated]),
                "strong": _accuracy(y[escalated], unsafe[escalated]),
            }
        return out

    def evaluate_members(self, pairs: Sequence[Any], y: np.ndarray, n_boot: int = 1000) -> dict[str, Any]:
        """Each member alone on the same labelled pairs: its metrics at its own threshold, its scoring time and
        responses per second, and its escalation rate (0 for the fast member alone, 1 for the strong one), so a
        report can set the cascade beside what each member would do by itself.

        Every member scores every pair here (the strong one too, which the cascade spares on kept pairs): the point
        is the cost and quality of running it alone."""
        import time

        from seawall.detect.base import as_pairs

        self._check_fitted()
        pairs = as_pairs(pairs)
        y = np.asarray(y, dtype=np.int64)
        if len(pairs) != len(y):
            raise SeawallError(f"evaluate_members got {len(y)} labels for {len(pairs)} pairs")
        out: dict[str, Any] = {}
        for name, rate in (("fast", 0.0), ("strong", 1.0)):
            member = self.members_[name]
            start = time.perf_counter()
            p = member.score_unsafe(pairs)
            seconds = time.perf_counter() - start
            out[name] = member_report(member, y, p, seconds, n_boot) | {"escalation_rate": rate}
        return out

    # ---- persistence ---------------------------------------------------------------------------------------------
    def _state(self, folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        for name, member in self.members_.items():
            member.save(folder / name)
        return {"members": list(MEMBERS), "band": self.band}, {}

    def _load_state(self, folder: Path, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.members_ = {name: load_detector(folder / name) for name in state["members"]}
        width = state["band"]["logit_halfwidth"]
        self.halfwidth_ = float("inf") if width is None else float(width)


def _rate(n: int, seconds: float) -> float:
    return round(n / seconds, 2) if seconds > 0 else float("nan")


def _accuracy(y: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y) == np.asarray(pred, dtype=np.int64))) if len(y) else float("nan")
