"""The main job on embedded defaults: what `seawall demo` (and `make demo`) runs on a fresh machine."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from seawall.data import canonical_split, load
from seawall.data.stats import dataset_stats

console = Console()


def dataset_report(data_dir: str | None = None) -> None:
    """Print SecureBreak's statistics, its per-category table and the canonical split."""
    dataset = load("securebreak", data_dir=data_dir)
    stats = dataset_stats(dataset)
    console.rule("SecureBreak")
    console.print(
        f"{stats['rows']} responses to {stats['prompts']} questions, {stats['labels']['unsafe']} unsafe "
        f"({stats['unsafe_share']:.1%}); {stats['empty_responses']} empty; {stats['duplicate_pairs']} repeated pairs; "
        f"{stats['read']['repaired_rows']} rows repaired ({stats['read']['repaired']})"
    )
    table = Table("category", "questions", "rows", "unsafe", "unsafe share", title="per category")
    for category, counts in stats["categories"].items():
        table.add_row(
            category,
            str(counts["prompts"]),
            str(counts["rows"]),
            str(counts.get("unsafe", 0)),
            f"{counts.get('unsafe', 0) / counts['rows']:.1%}",
        )
    console.print(table)
    splits = canonical_split("securebreak", data_dir=data_dir)
    split_table = Table(
        "split", "questions", "rows", "unsafe share", title="canonical split (70/15/15 by question, seed 0)"
    )
    for name, records in splits.items():
        unsafe = sum(r.label == "unsafe" for r in records)
        split_table.add_row(
            name, str(len({r.prompt for r in records})), str(len(records)), f"{unsafe / len(records):.1%}"
        )
    console.print(split_table)


def run_demo(data_dir: str | None = None) -> None:
    """The dataset report, then train, calibrate, save and evaluate the default detector (a few minutes on 2 cores)."""
    from seawall.detect.demo import run as train_default_detector

    dataset_report(data_dir)
    train_default_detector(data_dir=data_dir)
