"""Grouped, stratified, seeded splits with a manifest of record ids that reproduces them."""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seawall.data.records import Record, ResponseRecord, normalize_text, record_text
from seawall.errors import DataError
from seawall.io import atomic_write_json

MANIFEST_FORMAT = "seawall-split/1"
CANONICAL_FRACTIONS: dict[str, float] = {"train": 0.70, "dev": 0.15, "test": 0.15}
CANONICAL_SEED = 0


@dataclass
class Split:
    """The records of each split and the manifest (ids per split + how they were made) that reproduces them."""

    subsets: dict[str, list[Record]]
    manifest: dict[str, Any]

    def __getitem__(self, name: str) -> list[Record]:
        return self.subsets[name]

    def save(self, path: str | Path) -> None:
        """Write the manifest as JSON, atomically."""
        atomic_write_json(path, self.manifest)


GROUP_BY = "normalize_text(metadata.group, else prompt, else response when the prompt is empty)"


def group_key(record: Record) -> str:
    """The group a record is split with: the group its loader named (`metadata["group"]`, e.g. a ToxiChat post),
    else its prompt, else its text when it has no prompt (moderation texts); normalised, so that texts differing
    only in case, punctuation or spacing stay together."""
    group = (getattr(record, "metadata", None) or {}).get("group")
    if group:
        return normalize_text(group)
    text = record_text(record)
    if not text.strip() and isinstance(record, ResponseRecord):
        text = record.response
    return normalize_text(text)


def _allocate(total: int, fractions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder allocation of `total` groups to splits in proportion to `fractions`."""
    weight = sum(fractions.values())
    exact = {name: total * f / weight for name, f in fractions.items()}
    counts = {name: int(value) for name, value in exact.items()}
    for name in sorted(exact, key=lambda n: exact[n] - counts[n], reverse=True)[
        : total - sum(counts.values())
    ]:
        counts[name] += 1
    return counts


def split_records(
    records: Sequence[Record],
    fractions: dict[str, float] | None = None,
    seed: int = CANONICAL_SEED,
    stratify: bool = True,
    dataset: str = "",
) -> Split:
    """Split records so that no prompt (exact or normalised) is in two splits, stratified by category, seeded.

    Groups of each category are shuffled and spread evenly over a [0, 1) ordering, so that cutting the ordering at
    the cumulative fractions gives every split its share of every category.
    """
    fractions = dict(fractions or CANONICAL_FRACTIONS)
    if not fractions or any(f <= 0 for f in fractions.values()):
        raise DataError(f"split fractions must be positive, got {fractions}")
    groups: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        groups[group_key(record)].append(record)
    strata: dict[str, list[str]] = defaultdict(list)
    for key, members in groups.items():
        category = getattr(members[0], "category", None) if stratify else None
        strata[category or ""].append(key)
    rng = random.Random(seed)
    ordering: list[tuple[float, str]] = []
    for stratum in sorted(strata):
        keys = sorted(strata[stratum])
        rng.shuffle(keys)
        ordering += [((position + rng.random()) / len(keys), key) for position, key in enumerate(keys)]
    ordering.sort()
    counts = _allocate(len(ordering), fractions)
    subsets: dict[str, list[Record]] = {}
    start = 0
    for name in fractions:
        chosen = [key for _, key in ordering[start : start + counts[name]]]
        start += counts[name]
        subsets[name] = [record for key in chosen for record in groups[key]]
        subsets[name].sort(key=lambda r: r.id)
    manifest = {
        "format": MANIFEST_FORMAT,
        "dataset": dataset,
        "seed": seed,
        "fractions": fractions,
        "group_by": GROUP_BY,
        "stratify_by": "category" if stratify else None,
        "counts": {name: {"records": len(rs), "groups": counts[name]} for name, rs in subsets.items()},
        "ids": {name: [r.id for r in rs] for name, rs in subsets.items()},
    }
    return Split(subsets, manifest)


def load_manifest(path: str | Path) -> dict[str, Any]:
    """Read a split manifest, checking its format."""
    path = Path(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise DataError(f"{path}: cannot read split manifest ({error})") from None
    if manifest.get("format") != MANIFEST_FORMAT or "ids" not in manifest:
        raise DataError(f"{path}: not a seawall split manifest (format {MANIFEST_FORMAT})")
    return manifest


def apply_manifest(records: Sequence[Record], manifest: dict[str, Any]) -> dict[str, list[Record]]:
    """Rebuild the splits of a manifest from records; ids the manifest names but the records lack are an error."""
    by_id = {record.id: record for record in records}
    subsets: dict[str, list[Record]] = {}
    for name, ids in manifest["ids"].items():
        missing = [i for i in ids if i not in by_id]
        if missing:
            raise DataError(
                f"split {name!r} of the manifest names {len(missing)} id(s) not in the data, e.g. {missing[:3]}"
            )
        subsets[name] = [by_id[i] for i in ids]
    return subsets


# Datasets whose own splits are used as they are (after checking that no group crosses them): ToxiChat's are
# disjoint by post. DiaSafety ships splits too, but 805 contexts occur in two of them, so it is re-split.
SHIPPED_SPLITS: dict[str, dict[str, str]] = {"toxichat": {"train": "train", "dev": "dev", "test": "test"}}


def shipped_split(records: Sequence[Record], names: dict[str, str], dataset: str = "") -> Split:
    """The dataset's own splits (`metadata["shipped_split"]` → our split name); a group in two of them is an error."""
    subsets: dict[str, list[Record]] = {name: [] for name in dict.fromkeys(names.values())}
    owner: dict[str, str] = {}
    for record in records:
        shipped = (getattr(record, "metadata", None) or {}).get("shipped_split")
        if shipped not in names:
            raise DataError(
                f"{dataset}: record {record.id} has shipped split {shipped!r}, not one of {list(names)}"
            )
        name = names[shipped]
        key = group_key(record)
        if owner.setdefault(key, name) != name:
            raise DataError(
                f"{dataset}: record {record.id} ({name}) shares its group with the {owner[key]} split: "
                "the shipped splits overlap"
            )
        subsets[name].append(record)
    for members in subsets.values():
        members.sort(key=lambda r: r.id)
    groups = {name: len({group_key(r) for r in members}) for name, members in subsets.items()}
    manifest = {
        "format": MANIFEST_FORMAT,
        "dataset": dataset,
        "seed": None,
        "fractions": {name: len(members) / max(1, len(records)) for name, members in subsets.items()},
        "group_by": GROUP_BY,
        "stratify_by": None,
        "shipped": names,
        "counts": {name: {"records": len(rs), "groups": groups[name]} for name, rs in subsets.items()},
        "ids": {name: [r.id for r in rs] for name, rs in subsets.items()},
    }
    return Split(subsets, manifest)


def canonical(name: str, data_dir: str | Path | None = None) -> Split:
    """The project's canonical split of a response dataset, with its manifest: the shipped splits where they are
    grouped (`SHIPPED_SPLITS`), else 70/15/15 train/dev/test grouped by `group_key`, stratified by category, seed 0."""
    from seawall.data.dataset import load

    dataset = load(name, data_dir=data_dir)
    if name in SHIPPED_SPLITS:
        return shipped_split(dataset.records, SHIPPED_SPLITS[name], dataset=name)
    return split_records(dataset.records, CANONICAL_FRACTIONS, CANONICAL_SEED, dataset=name)


def canonical_split(name: str, data_dir: str | Path | None = None) -> dict[str, list[Record]]:
    """The records of `canonical(name)`'s train/dev/test splits."""
    return canonical(name, data_dir).subsets
