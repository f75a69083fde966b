"""Dataset statistics: size, label balance, per-category table, empties, duplicates, repairs."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from seawall.data.dataset import Dataset
from seawall.data.labels import duplicate_count
from seawall.data.records import PromptRecord, ResponseRecord, TaskExample


def dataset_stats(dataset: Dataset) -> dict[str, Any]:
    """A JSON-able summary of a dataset; `categories` maps each category to its counts."""
    records = dataset.records
    stats: dict[str, Any] = {
        "name": dataset.name,
        "split": dataset.split,
        "rows": len(records),
        "read": dataset.report.as_dict(),
    }
    categories: dict[str, Counter] = defaultdict(Counter)
    if records and isinstance(records[0], ResponseRecord):
        labels = Counter(r.label for r in records)
        stats["labels"] = dict(labels)
        stats["unsafe_share"] = labels["unsafe"] / len(records)
        stats["prompts"] = len({r.prompt for r in records})
        stats["empty_responses"] = sum(1 for r in records if not r.response.strip())
        stats["duplicate_pairs"] = duplicate_count(records)
        for r in records:
            categories[r.category or "(none)"].update({"rows": 1, r.label: 1})
        prompts_by_category: dict[str, set[str]] = defaultdict(set)
        for r in records:
            prompts_by_category[r.category or "(none)"].add(r.prompt)
        for category, prompts in prompts_by_category.items():
            categories[category]["prompts"] = len(prompts)
    elif records and isinstance(records[0], PromptRecord):
        stats["harmful"] = sum(r.harmful for r in records)
        stats["benign"] = len(records) - stats["harmful"]
        for r in records:
            categories[r.category or "(none)"].update({"rows": 1, "harmful" if r.harmful else "benign": 1})
    elif records and isinstance(records[0], TaskExample):
        stats["targets"] = dict(Counter(r.target for r in records).most_common(20))
        for r in records:
            categories[r.target if r.choices else "(open answer)"].update({"rows": 1})
    stats["categories"] = {name: dict(counts) for name, counts in sorted(categories.items())}
    return stats
