"""Rates with bootstrap confidence intervals, per-group breakdowns, and recovery."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def bootstrap_ci(
    values: Sequence[float], n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `values` (resampling items with replacement)."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        return (float("nan"), float("nan"))
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(n_boot, x.size))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return (float(low), float(high))


def rate(values: Sequence[float], n_boot: int = 2000, seed: int = 0) -> dict:
    """Mean of 0/1 outcomes with its n and 95% bootstrap interval."""
    x = np.asarray(values, dtype=float)
    low, high = bootstrap_ci(x, n_boot=n_boot, seed=seed)
    return {"rate": float(x.mean()) if x.size else float("nan"), "n": int(x.size), "ci95": [low, high]}


def grouped_rates(
    values: Sequence[float], groups: Sequence[str | None], n_boot: int = 2000, seed: int = 0
) -> dict:
    """`rate` per group label (None becomes "unknown"), groups sorted by name."""
    by: dict[str, list[float]] = {}
    for value, group in zip(values, groups, strict=True):
        by.setdefault(group or "unknown", []).append(value)
    return {g: rate(v, n_boot=n_boot, seed=seed) for g, v in sorted(by.items())}


def recovery(hrr_target: float, hrr_restored: float, hrr_aligned: float) -> float | None:
    """(HRR_T − HRR_T′) / (HRR_T − HRR_A): 1 restores A's safety, 0 changes nothing; None when T is not worse than A."""
    gap = hrr_target - hrr_aligned
    if gap <= 0:
        return None
    return (hrr_target - hrr_restored) / gap
