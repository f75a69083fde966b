"""Prometheus text exposition (format 0.0.4), hand-written: counters with labels and one histogram."""

from __future__ import annotations

import threading
from collections import defaultdict

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(names: tuple[str, ...], values: tuple[str, ...]) -> str:
    if not names:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for v in values)
    return "{" + ",".join(f'{n}="{v}"' for n, v in zip(names, escaped, strict=True)) + "}"


class Metrics:
    """The guard's counters and detector latency histogram; `render()` gives the /metrics body."""

    COUNTERS = {  # noqa: RUF012
        "seawall_requests_total": ("Requests received, by endpoint and HTTP status.", ("endpoint", "status")),
        "seawall_verdicts_total": ("Guard decisions, by action and category.", ("action", "category")),
        "seawall_upstream_errors_total": ("Upstream failures, by kind.", ("kind",)),
        "seawall_detector_failures_total": ("Detector errors and timeouts (fail-closed or fail-open).", ()),
        "seawall_dropped_fields_total": (
            "Upstream answer fields not passed on (unchecked or blocked), by part of the answer.",
            ("field",),
        ),
        "seawall_audit_failures_total": ("Decisions the audit log failed to write (each also logged).", ()),
    }

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, dict[tuple[str, ...], float]] = defaultdict(lambda: defaultdict(float))
        self._hist = [0] * len(LATENCY_BUCKETS_S)
        self._hist_sum = 0.0
        self._hist_count = 0

    def inc(self, name: str, *labels: str, value: float = 1.0) -> None:
        """Add to a counter."""
        with self._lock:
            self._counts[name][tuple(labels)] += value

    def observe_detector(self, seconds: float) -> None:
        """Record one detector latency."""
        with self._lock:
            for i, bound in enumerate(LATENCY_BUCKETS_S):
                if seconds <= bound:
                    self._hist[i] += 1
            self._hist_sum += seconds
            self._hist_count += 1

    def render(self) -> str:
        """The Prometheus text format."""
        lines: list[str] = []
        with self._lock:
            for name, (help_text, label_names) in self.COUNTERS.items():
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
                for values, count in sorted(self._counts[name].items()):
                    lines.append(f"{name}{_labels(label_names, values)} {count:g}")
            name = "seawall_detector_latency_seconds"
            lines += [f"# HELP {name} Detector latency per check.", f"# TYPE {name} histogram"]
            for bound, count in zip(LATENCY_BUCKETS_S, self._hist, strict=True):
                lines.append(f'{name}_bucket{{le="{bound:g}"}} {count}')
            lines.append(f'{name}_bucket{{le="+Inf"}} {self._hist_count}')
            lines.append(f"{name}_sum {self._hist_sum:.6f}")
            lines.append(f"{name}_count {self._hist_count}")
        return "\n".join(lines) + "\n"
