"""Label parsing, duplicate handling and multi-annotator aggregation."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from seawall.data.readers import is_missing
from seawall.data.records import Label, ResponseRecord
from seawall.errors import DataError

Aggregation = Literal["any-unsafe", "majority"]

_UNSAFE = {"1", "1.0", "unsafe", "harmful", "true", "yes", "jailbroken", "positive"}
_SAFE = {"0", "0.0", "safe", "harmless", "unharmful", "false", "no", "benign", "negative"}
# What spreadsheets, R and pandas write for an empty cell; in a label column it can only mean "no label".
_MISSING = {"na", "n/a", "nan", "none", "null"}


def parse_label(value: Any, where: str, allow_missing: bool = False) -> Label:
    """Map a raw label (1/0, unsafe/safe, true/false…) to a Label; anything else is an error naming `where`."""
    if is_missing(value) or str(value).strip().lower() in _MISSING:
        if allow_missing:
            return "unknown"
        raise DataError(f"{where}: missing label")
    text = str(value).strip().lower()
    if text in _UNSAFE:
        return "unsafe"
    if text in _SAFE:
        return "safe"
    if text == "unknown":
        return "unknown"
    raise DataError(f"{where}: label {value!r} is not one of 1/0, unsafe/safe, true/false")


def aggregate_labels(labels: Iterable[Label], rule: Aggregation = "any-unsafe") -> Label:
    """Combine several annotators' labels: `any-unsafe` (conservative) or `majority` (ties go to unsafe)."""
    votes = Counter(label for label in labels if label != "unknown")
    if not votes:
        return "unknown"
    if rule == "any-unsafe":
        return "unsafe" if votes["unsafe"] else "safe"
    if rule == "majority":
        return "unsafe" if votes["unsafe"] >= votes["safe"] else "safe"
    raise DataError(f"unknown label aggregation {rule!r}; use any-unsafe or majority")


@dataclass(frozen=True)
class DedupReport:
    """How many rows deduplication removed, and how many duplicate groups disagreed on the label."""

    rows_in: int
    rows_out: int
    conflicting_groups: int
    relabelled_unsafe: int

    @property
    def removed(self) -> int:
        return self.rows_in - self.rows_out


def duplicate_count(records: Sequence[ResponseRecord]) -> int:
    """Rows that repeat an earlier row's (prompt, response) pair."""
    seen: set[tuple[str, str]] = set()
    repeats = 0
    for record in records:
        key = (record.prompt, record.response)
        repeats += key in seen
        seen.add(key)
    return repeats


def deduplicate(
    records: Sequence[ResponseRecord], rule: Aggregation = "any-unsafe"
) -> tuple[list[ResponseRecord], DedupReport]:
    """Keep the first row of each (prompt, response) pair; its label aggregates the group's labels by `rule`."""
    groups: dict[tuple[str, str], list[ResponseRecord]] = {}
    for record in records:
        groups.setdefault((record.prompt, record.response), []).append(record)
    kept: list[ResponseRecord] = []
    conflicts = relabelled = 0
    for group in groups.values():
        first = group[0]
        labels = [r.label for r in group]
        if len(set(labels) - {"unknown"}) > 1:
            conflicts += 1
        label = aggregate_labels(labels, rule)
        if label != first.label:
            relabelled += label == "unsafe"
            first = replace(first, label=label, metadata={**first.metadata, "duplicate_labels": labels})
        kept.append(first)
    return kept, DedupReport(len(records), len(kept), conflicts, relabelled)
