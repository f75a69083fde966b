"""Prometheus text exposition (format 0.0.4), hand-written: counters with labels and two histograms."""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped, strict=True)) + "}"


class _Histogram:
    """Cumulative buckets, sum and count of one unlabelled histogram (the caller holds the lock)."""

    def __init__(self, name: str, help_text: str, buckets: tuple[float, ...], sum_format: str) -> None:
        self.name, self.help_text, self.buckets, self.sum_format = name, help_text, buckets, sum_format
        self.counts = [0] * len(buckets)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.sum += value
        self.count += 1

    def lines(self) -> list[str]:
        name = self.name
        lines = [f"# HELP {name} {self.help_text}", f"# TYPE {name} histogram"]
        for bound, count in zip(self.buckets, self.counts, strict=True):
            lines.append(f'{name}_bucket{{le="{bound:g}"}} {count}')
        lines.append(f'{name}_bucket{{le="+Inf"}} {self.count}')
        lines.append(f"{name}_sum {self.sum:{self.sum_format}}")
        lines.append(f"{name}_count {self.count}")
        return lines


class Metrics:
    """The guard's counters, detector latency and detector batch-size histograms; `render()` gives /metrics."""

    COUNTERS = {  # noqa: RUF012
        "seawall_requests_total": ("Requests received, by endpoint and HTTP status.", ("endpoint", "status")),
        "seawall_verdicts_total": ("Guard decisions, by action and category.", ("action", "category")),
        "seawall_upstream_errors_total": ("Upstream failures, by kind.", ("kind",)),
        "seawall_detector_failures_total": ("Detector errors and timeouts (fail-closed or fail-open).", ()),
        "seawall_detector_batches_abandoned_total": (
            "Shared detector calls still running when all their checks had timed out: their slot went to the "
            "next batch (the call keeps its detector thread until it returns).",
            (),
        ),
        "seawall_dropped_fields_total": (
            "Upstream answer fields not passed on (unchecked or blocked), by part of the answer.",
            ("field",),
        ),
        "seawall_audit_failures_total": ("Decisions the audit log failed to write (each also logged).", ()),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[tuple[str, ...], float]] = defaultdict(lambda: defaultdict(float))
        self._latency = _Histogram(
            "seawall_detector_latency_seconds", "Detector latency per check.", LATENCY_BUCKETS_S, ".6f"
        )
        self._batch = _Histogram(
            "seawall_detector_batch_pairs",
            "Pairs scored per detector call (concurrent checks share a call when batching is on).",
            BATCH_BUCKETS,
            "g",
        )

    def inc(self, name: str, *labels: str, value: float = 1.0) -> None:
        """Add to a counter."""
        with self._lock:
            self._counts[name][tuple(labels)] += value

    def observe_detector(self, seconds: float) -> None:
        """Record one detector latency."""
        with self._lock:
            self._latency.observe(seconds)

    def observe_detector_batch(self, pairs: int) -> None:
        """Record the size of one detector call."""
        with self._lock:
            self._batch.observe(pairs)

    def render(self) -> str:
        """The Prometheus text format."""
        lines: list[str] = []
        with self._lock:
            for name, (help_text, label_names) in self.COUNTERS.items():
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
                for values, count in sorted(self._counts[name].items()):
                    lines.append(f"{name}{_labels(label_names, values)} {count:g}")
            lines += self._latency.lines()
            lines += self._batch.lines()
        return "\n".join(lines) + "\n"
