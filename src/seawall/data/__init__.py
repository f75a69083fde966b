"""The safety-data layer: record types, dataset loaders, labels, splits, taxonomy."""

from seawall.data.dataset import (
    DATASETS,
    Dataset,
    load,
    load_records,
    prompt_records,
    response_records,
    task_examples,
)
from seawall.data.labels import aggregate_labels, deduplicate, duplicate_count
from seawall.data.records import PromptRecord, ResponseRecord, TaskExample, normalize_text
from seawall.data.split import Split, apply_manifest, canonical_split, split_records

__all__ = [
    "DATASETS",
    "Dataset",
    "PromptRecord",
    "ResponseRecord",
    "Split",
    "TaskExample",
    "aggregate_labels",
    "apply_manifest",
    "canonical_split",
    "deduplicate",
    "duplicate_count",
    "load",
    "load_records",
    "normalize_text",
    "prompt_records",
    "response_records",
    "split_records",
    "task_examples",
]
