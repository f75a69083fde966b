"""`ensemble`: every member scores every pair; the verdict is the weighted mean of their log-odds margins.

Each member keeps its own calibration and threshold. A member's margin on a pair is logit(p) − logit(t), its
calibrated P(unsafe) against its own threshold (`seawall.detect.members.recentre`), so a member that is sure counts
for more than one that is not, and members whose operating points differ are on one scale. The ensemble's raw score
is σ(Σ wᵢ·marginᵢ / Σ wᵢ). With `calibration="none"` and `threshold_strategy="default"` a pair is unsafe when the
weighted margins sum above zero; a config can instead calibrate that score on dev and pick its threshold there, as
for any detector.

Why: members that fail on different sources cancel part of each other's errors. The fine-tuned `encoder` learns the
sources it is trained on well and generalizes poorly to one it has not seen; the frozen `probe` is the other way
round (docs/results/detector-loso.md). Cost: the sum of the members' costs.

Members are saved detector folders or configs `{"backend": …, "params": {…}}` fitted on the ensemble's train and
dev records (`seawall.detect.members`); saved without pickle as nested folders `member-0/`, `member-1/`, …
The risk-category model is the first member's.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seawall.data.records import ResponseRecord
from seawall.detect.base import DETECTORS, Detector, Pair, as_pairs, load_detector
from seawall.detect.calibration import apply_calibrator
from seawall.detect.members import is_folder_spec, logit, member_detector
from seawall.errors import SeawallError


@DETECTORS.register("ensemble")
class EnsembleDetector(Detector):
    """The weighted mean of the members' log-odds margins."""

    backend = "ensemble"

    def __init__(
        self,
        members: list[Any] | None = None,
        weights: list[float] | None = None,
        calibration: str = "none",
        threshold_strategy: str = "default",
        target_recall: float = 0.95,
        category_model: bool = True,
        seed: int = 0,
    ) -> None:
        self.members = members
        self.weights = weights
        self.calibration = calibration
        self.threshold_strategy = threshold_strategy
        self.target_recall = target_recall
        self.category_model = category_model
        self.seed = seed

    # ---- fitting -------------------------------------------------------------------------------------------------
    def _weights(self) -> np.ndarray:
        members = self.members or []
        if len(members) < 2:
            raise SeawallError(f"ensemble: needs at least two members, got {len(members)}")
        if self.weights is None:
            return np.ones(len(members))
        weights = np.asarray(self.weights, dtype=np.float64)
        if weights.shape != (len(members),):
            raise SeawallError(
                f"ensemble: {len(weights)} weights for {len(members)} members; give one weight per member"
            )
        if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
            raise SeawallError(
                f"ensemble: weights must be finite, ≥ 0 and not all 0, got {list(self.weights)}"
            )
        return weights

    def fit(self, records: Sequence[ResponseRecord], dev: Sequence[ResponseRecord] | None = None) -> Detector:
        """Load or fit every member, then calibrate the ensemble's score on `dev` as every detector does."""
        self._weights()  # a bad weight list is named before any member trains
        self.members_ = [
            member_detector("ensemble", f"member-{i}", spec, records, dev)
            for i, spec in enumerate(self.members or [])
        ]
        return super().fit(records, dev=dev)

    def _needs_labels(self) -> bool:
        return False  # the members learn from the labels (a config member's own fit checks them)

    def _fit(self, pairs: list[Pair], y: np.ndarray, dev: tuple[list[Pair], np.ndarray] | None) -> None:
        self.training_["ensemble"] = {
            "weights": self._weights().tolist(),
            "members": [
                {
                    "backend": m.backend,
                    "detector_id": m.detector_id,
                    "threshold": float(m.threshold_),
                    "from": "folder" if is_folder_spec(spec) else "config",
                }
                for m, spec in zip(self.members_, self.members or [], strict=True)
            ],
        }

    def _fit_categories(self, records: Sequence[ResponseRecord]) -> None:
        # The first member has learned the categories (from these records, or before it was saved): share its model.
        first = self.members_[0]
        self.category_model_ = first.category_model_ if self.category_model else None
        if self.category_model_ is not None:
            self.training_["category"] = {"from": "member 0", **first.training_.get("category", {})}

    # ---- scoring -------------------------------------------------------------------------------------------------
    def _member_scores(self, pairs: list[Pair]) -> tuple[np.ndarray, list[float]]:
        """Each member's calibrated P(unsafe), shape (n, members), and each member's scoring seconds."""
        scores, seconds = [], []
        for member in self.members_:
            start = time.perf_counter()
            scores.append(member.score_unsafe(pairs))
            seconds.append(time.perf_counter() - start)
        return np.stack(scores, axis=1), seconds

    def _combine(self, member_p: np.ndarray) -> np.ndarray:
        thresholds = np.asarray([m.threshold_ for m in self.members_])
        weights = self._weights()
        z = (logit(member_p) - logit(thresholds)) @ weights / weights.sum()
        return 1.0 / (1.0 + np.exp(-z))

    def _score(self, pairs: list[Pair]) -> np.ndarray:
        return self._combine(self._member_scores(pairs)[0])

    def score_with_members(self, pairs: Sequence[Any]) -> tuple[np.ndarray, dict[str, dict[str, Any]]]:
        """(calibrated P(unsafe), members): the scores of `score_unsafe` and, per member, the member, its own
        calibrated P(unsafe) and its scoring seconds on the same pairs, so an evaluation sets each member alone beside
        the ensemble without scoring twice."""
        self._check_fitted()
        pairs = as_pairs(pairs)
        member_p, seconds = self._member_scores(pairs) if pairs else (np.zeros((0, len(self.members_))), [])
        p = apply_calibrator(self.calibrator_, self._combine(member_p)) if pairs else np.zeros(0)
        members = {
            f"member-{i}": {
                "detector": m,
                "p": member_p[:, i],
                "scoring_seconds": seconds[i] if pairs else 0.0,
            }
            for i, m in enumerate(self.members_)
        }
        return p, members

    # ---- persistence ---------------------------------------------------------------------------------------------
    def _state(self, folder: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        names = [f"member-{i}" for i in range(len(self.members_))]
        for name, member in zip(names, self.members_, strict=True):
            member.save(folder / name)
        return {"members": names}, {}

    def _load_state(self, folder: Path, state: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.members_ = [load_detector(folder / name) for name in state["members"]]
