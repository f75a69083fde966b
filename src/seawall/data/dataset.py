"""The dataset registry and `load(name)`: every dataset in shared/data behind one call."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from seawall.data.readers import ReadReport
from seawall.data.records import PromptRecord, Record, ResponseRecord, TaskExample
from seawall.errors import SeawallError
from seawall.paths import data_dir as resolve_data_dir
from seawall.registry import Registry

Kind = Literal["responses", "harmful-prompts", "benign-prompts", "task", "instructions"]


@dataclass
class Dataset:
    """Records of one dataset (or one split of it) and the report of how they were read."""

    name: str
    records: list[Record]
    report: ReadReport = field(default_factory=ReadReport)
    split: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self):
        return iter(self.records)


@dataclass(frozen=True)
class DatasetInfo:
    """Declarative description of a dataset: where it lives, what it holds, and under which licence."""

    name: str
    kind: Kind
    path: str
    licence: str
    description: str
    reader: Callable[..., Dataset]
    splits: tuple[str, ...] = ()
    default_split: str | None = None

    def files(self, root: Path) -> Path:
        return root / self.path


DATASETS: Registry[DatasetInfo] = Registry("dataset")


def register(
    name: str,
    kind: Kind,
    path: str,
    licence: str,
    description: str,
    splits: tuple[str, ...] = (),
    default_split: str | None = None,
) -> Callable[[Callable[..., Dataset]], Callable[..., Dataset]]:
    """Register a reader function `reader(root: Path, split: str | None) -> Dataset` under `name`."""

    def decorator(reader: Callable[..., Dataset]) -> Callable[..., Dataset]:
        DATASETS.register(name)(
            DatasetInfo(name, kind, path, licence, description, reader, splits, default_split)
        )
        return reader

    return decorator


def load(name: str, data_dir: str | Path | None = None, split: str | None = None, **options: Any) -> Dataset:
    """Load a registered dataset by name, e.g. `load("securebreak")` or `load("sst2", split="test")`."""
    import seawall.data.sources  # noqa: F401  (registers the datasets)

    info = DATASETS.get(name)
    if split is not None and split not in info.splits:
        raise SeawallError(f"dataset {name!r} has no split {split!r}; splits: {list(info.splits) or 'none'}")
    root = resolve_data_dir(data_dir)
    dataset = info.reader(root, split or info.default_split, **options)
    dataset.name = name
    return dataset


def load_records(name: str, data_dir: str | Path | None = None, split: str | None = None) -> list[Record]:
    """The records of `load(name, data_dir, split)` as a list: the default of the injectable `load` callables of
    the lab and the evaluation (tests pass in-memory stand-ins with the same signature)."""
    return list(load(name, data_dir=data_dir, split=split).records)


def response_records(dataset: Dataset) -> list[ResponseRecord]:
    """The dataset's records, checked to be response records (for detectors)."""
    if dataset.records and not isinstance(dataset.records[0], ResponseRecord):
        raise SeawallError(f"dataset {dataset.name!r} holds no labelled responses")
    return dataset.records  # type: ignore[return-value]


def prompt_records(dataset: Dataset) -> list[PromptRecord]:
    """The dataset's records, checked to be prompt records (for evaluation)."""
    if dataset.records and not isinstance(dataset.records[0], PromptRecord):
        raise SeawallError(f"dataset {dataset.name!r} holds no prompts")
    return dataset.records  # type: ignore[return-value]


def task_examples(dataset: Dataset) -> list[TaskExample]:
    """The dataset's records, checked to be task examples (for customization and utility)."""
    if dataset.records and not isinstance(dataset.records[0], TaskExample):
        raise SeawallError(f"dataset {dataset.name!r} holds no task examples")
    return dataset.records  # type: ignore[return-value]
