"""Probability calibration and operating thresholds, stored as plain JSON (no pickled estimators).

- temperature: p' = sigmoid(logit(p) / T), one parameter fitted by minimising the dev log-loss. Monotone, so it
  never changes the ranking (AUROC) and it cannot over-fit a small dev set.
- isotonic: a non-decreasing step function fitted by sklearn's IsotonicRegression; stored as its knots and applied
  with linear interpolation (what IsotonicRegression.predict does, with clipping at the ends).
- thresholds: "recall" = the highest threshold whose dev recall on unsafe is ≥ target_recall (the conservative
  operating point: miss at most 1 − target of the unsafe responses); "f1" = the threshold maximising dev F1;
  "accuracy" = the threshold maximising dev accuracy (agreement with the labels); "source_balanced" (when the dev
  rows' sources are given) = the threshold maximising the *mean over sources* of each source's accuracy, so that
  the largest source of a mixed dev set does not set the operating point for every kind of text; "default" = 0.5.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from seawall.errors import SeawallError

EPS = 1e-6
METHODS = ("none", "temperature", "isotonic")


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, EPS, 1 - EPS)
    return np.log(p) - np.log1p(-p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def fit_calibrator(raw: np.ndarray, y: np.ndarray, method: str) -> dict[str, Any]:
    """Fit a calibrator mapping raw P(unsafe) to calibrated P(unsafe); returns its JSON description."""
    raw = np.asarray(raw, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if method == "none":
        return {"method": "none"}
    if method == "temperature":
        from scipy.optimize import minimize_scalar

        z = _logit(raw)

        def nll(log_t: float) -> float:
            p = np.clip(_sigmoid(z / np.exp(log_t)), EPS, 1 - EPS)
            return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))

        result = minimize_scalar(nll, bounds=(-4.0, 4.0), method="bounded")
        return {"method": "temperature", "temperature": float(np.exp(result.x))}
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
        return {
            "method": "isotonic",
            "x": [float(v) for v in iso.X_thresholds_],
            "y": [float(v) for v in iso.y_thresholds_],
        }
    raise SeawallError(f"unknown calibration method {method!r}; known: {', '.join(METHODS)}")


def apply_calibrator(calibrator: dict[str, Any], raw: np.ndarray) -> np.ndarray:
    """Apply a calibrator produced by `fit_calibrator`."""
    raw = np.asarray(raw, dtype=np.float64)
    method = calibrator.get("method", "none")
    if method == "none":
        return raw
    if method == "temperature":
        return _sigmoid(_logit(raw) / float(calibrator["temperature"]))
    if method == "isotonic":
        return np.interp(raw, np.asarray(calibrator["x"]), np.asarray(calibrator["y"]))
    raise SeawallError(f"unknown calibration method {method!r} in the detector config")


def choose_thresholds(
    p: np.ndarray, y: np.ndarray, target_recall: float = 0.95, groups: np.ndarray | None = None
) -> dict[str, float]:
    """The operating thresholds on calibrated probabilities: "recall" (≥ target), "f1" (best F1), "accuracy",
    "source_balanced" (only with `groups`, one source name per row) and "default"."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if not 0.0 < target_recall <= 1.0:
        raise SeawallError(f"target_recall must be in (0, 1], got {target_recall}")
    if groups is not None and len(groups) != len(p):
        raise SeawallError(f"threshold groups: {len(groups)} source names for {len(p)} dev rows")
    candidates = np.unique(p)[::-1]  # descending: recall grows as the threshold falls
    n_pos = max(int(y.sum()), 1)
    best_f1, best_t = -1.0, 0.5
    best_acc, acc_t = -1.0, 0.5
    recall_t = float(candidates[-1]) if len(candidates) else 0.0
    found = False
    for t in candidates:
        pred = p >= t
        tp = int((pred & (y == 1)).sum())
        fp = int((pred & (y == 0)).sum())
        recall = tp / n_pos
        f1 = 2 * tp / (2 * tp + fp + (n_pos - tp)) if tp else 0.0
        if f1 > best_f1:
            best_f1, best_t = f1, float(t)
        accuracy = float((pred == (y == 1)).mean()) if len(y) else 0.0
        if accuracy > best_acc:
            best_acc, acc_t = accuracy, float(t)
        if not found and recall >= target_recall:
            recall_t, found = float(t), True
    out = {"default": 0.5, "recall": recall_t, "f1": best_t, "accuracy": acc_t}
    if groups is not None and len(p):
        out["source_balanced"] = _source_balanced_threshold(p, y, np.asarray(groups))
    return out


def _source_balanced_threshold(p: np.ndarray, y: np.ndarray, groups: np.ndarray) -> float:
    # Mean of per-source accuracies over a grid of candidate thresholds; sorting once per source makes each
    # candidate an O(log n) lookup instead of a pass over the dev set.
    candidates = np.unique(np.quantile(p, np.linspace(0.0, 1.0, 513)))
    total = np.zeros(len(candidates))
    for name in np.unique(groups):
        mask = groups == name
        scores, labels = p[mask], y[mask]
        order = np.argsort(scores)
        scores, labels = scores[order], labels[order]
        # below[i] = number of rows with score < candidate i (predicted safe).
        below = np.searchsorted(scores, candidates, side="left")
        pos_below = np.concatenate([[0], np.cumsum(labels)])[below]
        neg_below = below - pos_below
        n_pos = int(labels.sum())
        correct = neg_below + (n_pos - pos_below)
        total += correct / len(scores)
    return float(candidates[int(np.argmax(total))])


def expected_calibration_error(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> float:
    """ECE with equal-width bins: Σ_b (|b|/n) · |mean(y in b) − mean(p in b)|."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if len(p) == 0:
        return float("nan")
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            total += mask.mean() * abs(y[mask].mean() - p[mask].mean())
    return float(total)


def reliability_bins(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> list[dict[str, float]]:
    """Per-bin mean confidence, observed unsafe rate and count (for the calibration diagram)."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    bins = np.minimum((p * n_bins).astype(int), n_bins - 1)
    rows = []
    for b in range(n_bins):
        mask = bins == b
        if mask.any():
            rows.append(
                {
                    "lo": b / n_bins,
                    "hi": (b + 1) / n_bins,
                    "mean_p": float(p[mask].mean()),
                    "frac_unsafe": float(y[mask].mean()),
                    "count": int(mask.sum()),
                }
            )
    return rows
