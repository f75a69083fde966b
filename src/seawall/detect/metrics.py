"""Detector metrics (unsafe = positive class), bootstrap intervals, per-category tables and plots."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seawall.detect.calibration import expected_calibration_error, reliability_bins

POINT_METRICS = ("accuracy", "precision", "recall", "f1", "fpr", "fnr", "auroc", "auprc", "ece")


def confusion(y: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """tp, fp, tn, fn with unsafe (1) as the positive class."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(pred).astype(bool)
    return {
        "tp": int((pred & y).sum()),
        "fp": int((pred & ~y).sum()),
        "tn": int((~pred & ~y).sum()),
        "fn": int((~pred & y).sum()),
    }


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def point_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy, precision, recall, F1, FPR, FNR at `threshold`; AUROC, AUPRC (average precision), ECE."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    both = len(np.unique(y)) == 2
    metrics = point_metrics_no_rank(y, p, threshold)
    metrics["auroc"] = float(roc_auc_score(y, p)) if both else float("nan")
    metrics["auprc"] = float(average_precision_score(y, p)) if both else float("nan")
    return metrics


def bootstrap_ci(
    y: np.ndarray, p: np.ndarray, threshold: float, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict[str, list[float]]:
    """Percentile bootstrap (1 − alpha) intervals of every point metric, resampling rows with replacement."""
    rng = np.random.default_rng(seed)
    y = np.asarray(y)
    p = np.asarray(p)
    samples: dict[str, list[float]] = {k: [] for k in (*POINT_METRICS, "flag_rate")}
    for _ in range(n_boot):
        idx = rng.integers(0, len(y), len(y))
        m = _fast_metrics(y[idx], p[idx], threshold)
        for k, v in m.items():
            samples[k].append(v)
    out = {}
    for k, values in samples.items():
        arr = np.asarray(values, dtype=np.float64)
        arr = arr[~np.isnan(arr)]
        out[k] = (
            [float(np.quantile(arr, alpha / 2)), float(np.quantile(arr, 1 - alpha / 2))]
            if len(arr)
            else [float("nan")] * 2
        )
    return out


def _fast_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    # Rank-based AUROC and step AP without sklearn's validation overhead (1,000 resamples).
    m = point_metrics_no_rank(y, p, threshold)
    m["auroc"] = _auroc(y, p)
    m["auprc"] = _average_precision(y, p)
    return m


def point_metrics_no_rank(y: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """The threshold metrics and ECE only (no ranking metrics)."""
    c = confusion(y, p >= threshold)
    tp, fp, tn, fn = c["tp"], c["fp"], c["tn"], c["fn"]
    return {
        "accuracy": _ratio(tp + tn, len(y)),
        "precision": _ratio(tp, tp + fp),
        "recall": _ratio(tp, tp + fn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "fpr": _ratio(fp, fp + tn),
        "fnr": _ratio(fn, fn + tp),
        "ece": expected_calibration_error(p, y),
        "flag_rate": float((p >= threshold).mean()) if len(p) else float("nan"),
    }


def _auroc(y: np.ndarray, p: np.ndarray) -> float:
    from scipy.stats import rankdata

    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if not n_pos or not n_neg:
        return float("nan")
    ranks = rankdata(p)
    return float((ranks[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _average_precision(y: np.ndarray, p: np.ndarray) -> float:
    n_pos = int(y.sum())
    if not n_pos:
        return float("nan")
    order = np.argsort(-p, kind="mergesort")
    ys, ps = y[order], p[order]
    # Group tied scores (as sklearn does): precision/recall are evaluated at distinct thresholds only.
    distinct = np.r_[np.where(np.diff(ps))[0], len(ps) - 1]
    tps = np.cumsum(ys)[distinct]
    fps = (distinct + 1) - tps
    precision = tps / (tps + fps)
    recall = tps / n_pos
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def evaluate_scores(
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    categories: Sequence[str | None] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """The full report: point metrics, bootstrap CIs, confusion matrix, per-category table, curves."""
    from sklearn.metrics import precision_recall_curve, roc_curve

    y = np.asarray(y, dtype=np.int64)
    p = np.asarray(p, dtype=np.float64)
    report: dict[str, Any] = {
        "n": len(y),
        "n_unsafe": int(y.sum()),
        "threshold": float(threshold),
        "metrics": point_metrics(y, p, threshold),
        "ci95": bootstrap_ci(y, p, threshold, n_boot=n_boot, seed=seed) if n_boot else {},
        "confusion": confusion(y, p >= threshold),
        "reliability": reliability_bins(p, y),
    }
    if len(np.unique(y)) == 2:
        fpr, tpr, _ = roc_curve(y, p)
        prec, rec, _ = precision_recall_curve(y, p)
        report["curves"] = {
            "roc": {"fpr": _thin(fpr), "tpr": _thin(tpr)},
            "pr": {"precision": _thin(prec), "recall": _thin(rec)},
        }
    if categories is not None:
        report["per_category"] = per_category(y, p, threshold, categories)
    return report


def _thin(values: np.ndarray, max_points: int = 400) -> list[float]:
    step = max(1, len(values) // max_points)
    kept = values[::step]
    # By position, not by value: the curves' x and y are thinned apart and must keep the same points (comparing
    # values dropped the last point of one of them when its last kept value happened to equal its last value).
    if len(values) and (len(values) - 1) % step:
        kept = np.r_[kept, values[-1]]
    return [round(float(v), 5) for v in kept]


def per_category(
    y: np.ndarray, p: np.ndarray, threshold: float, categories: Sequence[str | None]
) -> list[dict[str, Any]]:
    """One row per category: n, unsafe share, accuracy, precision, recall, F1, FPR, AUROC."""
    cats = np.asarray([c if c else "(none)" for c in categories], dtype=object)
    rows = []
    for cat in sorted(set(cats.tolist())):
        mask = cats == cat
        m = point_metrics(y[mask], p[mask], threshold)
        rows.append(
            {
                "category": cat,
                "n": int(mask.sum()),
                "n_unsafe": int(y[mask].sum()),
                **{k: m[k] for k in ("accuracy", "precision", "recall", "f1", "fpr", "auroc")},
            }
        )
    return rows


def category_metrics(
    true: Sequence[str],
    pred: Sequence[str | None],
    groups: Sequence[str],
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict[str, Any]:
    """Accuracy of predicted risk categories against known ones, per true category, and the confusion counts.

    Rows answering the same prompt share its category, so the interval is a percentile bootstrap over `groups`
    (prompts), not rows: with few distinct prompts a row-level interval would be far too narrow.
    `majority_share` is the accuracy of always answering the most common true category of these rows.
    """
    true_arr = np.asarray(list(true), dtype=object)
    correct = np.asarray([t == p for t, p in zip(true, pred, strict=True)], dtype=np.float64)
    n = len(true_arr)
    out: dict[str, Any] = {
        "n": n,
        "n_prompts": len(set(groups)),
        "accuracy": float(correct.mean()) if n else float("nan"),
        "ci95": [float("nan")] * 2,
        "majority_share": max(Counter(true_arr.tolist()).values()) / n if n else float("nan"),
        "per_category": [],
        "confusion": {},
    }
    if not n:
        return out
    if n_boot:
        index = {g: i for i, g in enumerate(dict.fromkeys(groups))}
        gid = np.asarray([index[g] for g in groups])
        hits = np.bincount(gid, weights=correct, minlength=len(index))
        sizes = np.bincount(gid, minlength=len(index)).astype(np.float64)
        draws = np.random.default_rng(seed).integers(0, len(index), (n_boot, len(index)))
        accs = hits[draws].sum(axis=1) / sizes[draws].sum(axis=1)
        out["ci95"] = [float(np.quantile(accs, alpha / 2)), float(np.quantile(accs, 1 - alpha / 2))]
    for cat in sorted(set(true_arr.tolist())):
        mask = true_arr == cat
        out["per_category"].append(
            {
                "category": cat,
                "n": int(mask.sum()),
                "correct": int(correct[mask].sum()),
                "accuracy": float(correct[mask].mean()),
            }
        )
        out["confusion"][cat] = dict(
            sorted(
                Counter("(none)" if p is None else p for p, m in zip(pred, mask, strict=True) if m).items()
            )
        )
    return out


def format_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table; floats with 3 decimals, NaN as "–"."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if np.isnan(v) else f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def plot_report(report: dict[str, Any], folder: Path, title: str) -> list[str]:
    """PR curve, ROC curve, per-category F1/recall bars and the calibration diagram as PNGs; returns file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    curves = report.get("curves")
    if curves:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot(curves["pr"]["recall"], curves["pr"]["precision"])
        ax.set(
            xlabel="recall (unsafe)", ylabel="precision", title=f"PR — {title}", xlim=(0, 1), ylim=(0, 1.02)
        )
        ax.text(0.05, 0.05, f"AUPRC {report['metrics']['auprc']:.3f}", transform=ax.transAxes)
        fig.tight_layout()
        fig.savefig(folder / "pr.png", dpi=110)
        plt.close(fig)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot(curves["roc"]["fpr"], curves["roc"]["tpr"])
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ax.set(xlabel="false-positive rate", ylabel="true-positive rate", title=f"ROC — {title}")
        ax.text(0.55, 0.05, f"AUROC {report['metrics']['auroc']:.3f}", transform=ax.transAxes)
        fig.tight_layout()
        fig.savefig(folder / "roc.png", dpi=110)
        plt.close(fig)
        written += ["pr.png", "roc.png"]
    rows = report.get("per_category") or []
    if rows:
        fig, ax = plt.subplots(figsize=(7, 0.35 * len(rows) + 1.5))
        names = [r["category"] for r in rows]
        pos = np.arange(len(rows))
        ax.barh(pos - 0.2, [np.nan_to_num(r["f1"]) for r in rows], height=0.4, label="F1")
        ax.barh(pos + 0.2, [np.nan_to_num(r["recall"]) for r in rows], height=0.4, label="recall")
        ax.set_yticks(pos, names, fontsize=8)
        ax.set(xlim=(0, 1), title=f"per category — {title}")
        ax.legend(loc="lower right", fontsize=8)
        fig.tight_layout()
        fig.savefig(folder / "per_category.png", dpi=110)
        plt.close(fig)
        written.append("per_category.png")
    bins = report.get("reliability") or []
    if bins:
        fig, ax = plt.subplots(figsize=(4.5, 4))
        ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=0.8)
        ax.plot([b["mean_p"] for b in bins], [b["frac_unsafe"] for b in bins], marker="o")
        ax.set(
            xlabel="predicted P(unsafe)",
            ylabel="observed unsafe share",
            title=f"calibration — ECE {report['metrics']['ece']:.3f}",
            xlim=(0, 1),
            ylim=(0, 1),
        )
        fig.tight_layout()
        fig.savefig(folder / "calibration.png", dpi=110)
        plt.close(fig)
        written.append("calibration.png")
    return written
