"""What the composite detectors (`cascade`, `ensemble`) share: members given as folders or configs, and scores
put on one scale.

A member is a saved detector folder (loaded as it is) or a config `{"backend": NAME, "params": {…}}` fitted on the
composite's own train and dev records. Members keep their own calibration and threshold; `recentre` moves a member's
threshold to 0.5 on the logit scale (a shift of the prior odds that keeps its ranking), so members with different
operating points can be compared, routed between or averaged.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from seawall.data.records import ResponseRecord
from seawall.detect.base import Detector, load_detector, make_detector
from seawall.errors import SeawallError

EPS = 1e-6


def logit(p: np.ndarray | float) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def recentre(p: np.ndarray, threshold: float) -> np.ndarray:
    """σ(logit(p) − logit(threshold)): the same ranking, with `threshold` moved to 0.5."""
    return 1.0 / (1.0 + np.exp(-(logit(p) - logit(threshold))))


def is_folder_spec(spec: Any) -> bool:
    return isinstance(spec, (str, os.PathLike))


def member_detector(
    owner: str,
    name: str,
    spec: Any,
    records: Sequence[ResponseRecord],
    dev: Sequence[ResponseRecord] | None,
) -> Detector:
    """Load (a folder) or build and fit (a config) the member `name` of the composite backend `owner`."""
    if is_folder_spec(spec):
        return load_detector(spec)
    if isinstance(spec, dict) and isinstance(spec.get("backend"), str):
        unknown = set(spec) - {"backend", "params"}
        if unknown:
            raise SeawallError(
                f"{owner} member {name!r}: unknown keys {sorted(unknown)}; use backend, params"
            )
        return make_detector(spec["backend"], **(spec.get("params") or {})).fit(records, dev=dev)
    raise SeawallError(
        f"{owner} member {name!r}: expected a saved detector folder or {{backend: NAME, params: {{…}}}}, got {spec!r}"
    )


def member_report(
    member: Detector, y: np.ndarray, p: np.ndarray, seconds: float, n_boot: int = 1000
) -> dict[str, Any]:
    """A member alone on labelled rows it scored in `seconds`: its metrics at its own threshold (95% intervals) and
    its responses per second — what a composite's report sets beside the composite."""
    from seawall.detect.metrics import evaluate_scores

    report = evaluate_scores(np.asarray(y, dtype=np.int64), p, member.threshold_, n_boot=n_boot)
    return {
        "backend": member.backend,
        "detector_id": member.detector_id,
        "n": report["n"],
        "threshold": report["threshold"],
        "metrics": report["metrics"],
        "ci95": report["ci95"],
        "scoring_seconds": round(seconds, 3),
        "responses_per_s": round(len(p) / seconds, 2) if seconds > 0 else float("nan"),
    }
