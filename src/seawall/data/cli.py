"""`seawall data …`: list, inspect, split and export the safety datasets."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from seawall.data.dataset import DATASETS, Dataset, load
from seawall.data.generic import ColumnMap, load_file
from seawall.data.labels import deduplicate
from seawall.data.split import apply_manifest, load_manifest, split_records
from seawall.errors import SeawallError

app = typer.Typer(help="List, inspect, split and export the safety datasets.", no_args_is_help=True)
console = Console()

DataDir = typer.Option(
    None, "--data-dir", help="Shared data folder (default: $SEAWALL_DATA, then ../shared/data)."
)
PromptCol = typer.Option("prompt", "--prompt-col", help="Prompt column of a user file.")
ResponseCol = typer.Option(
    "response", "--response-col", help="Response column of a user file ('' for prompt files)."
)
LabelCol = typer.Option(
    "label",
    "--label-col",
    help="Label column of a user file (1/0, unsafe/safe, true/false; optional under its default name).",
)
CategoryCol = typer.Option(
    "category", "--category-col", help="Category column of a user file (optional under its default name)."
)
IdCol = typer.Option(None, "--id-col", help="Id column of a user file (default: <file stem>-<row>).")


def open_dataset(
    name: str,
    data_dir: str | None = None,
    split: str | None = None,
    prompt_col: str = "prompt",
    response_col: str | None = "response",
    label_col: str | None = "label",
    category_col: str | None = "category",
    id_col: str | None = None,
) -> Dataset:
    """A registered dataset by name, or a user file (CSV/TSV/JSONL/JSON/Parquet) through a column mapping."""
    import seawall.data.sources  # noqa: F401

    if name in DATASETS:
        return load(name, data_dir=data_dir, split=split)
    if Path(name).exists():
        columns = ColumnMap(prompt_col, response_col or None, label_col or None, category_col or None, id_col)
        return load_file(name, columns)
    raise SeawallError(f"{name!r} is neither a dataset ({', '.join(DATASETS.names())}) nor an existing file")


@app.command("list")
def list_datasets(data_dir: str | None = DataDir) -> None:
    """List every dataset with its kind, row count, splits and licence."""
    import seawall.data.sources  # noqa: F401

    table = Table("name", "kind", "rows", "splits", "licence")
    for name in DATASETS.names():
        info = DATASETS.get(name)
        try:
            rows = str(len(load(name, data_dir=data_dir)))
        except SeawallError as error:
            rows = f"[red]unavailable: {error}[/]"
        table.add_row(name, info.kind, rows, "/".join(info.splits) or "-", info.licence)
    console.print(table)


@app.command()
def stats(
    name: str = typer.Argument(..., help="Dataset name or a file path."),
    split: str | None = typer.Option(None, "--split", help="Split of a task or HarmBench set."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the statistics as JSON here."),
    data_dir: str | None = DataDir,
    prompt_col: str = PromptCol,
    response_col: str = ResponseCol,
    label_col: str = LabelCol,
    category_col: str = CategoryCol,
    id_col: str | None = IdCol,
) -> None:
    """Print rows, label balance, per-category table, empty responses, duplicates and repaired rows."""
    from seawall.data.stats import dataset_stats
    from seawall.io import atomic_write_json

    dataset = open_dataset(name, data_dir, split, prompt_col, response_col, label_col, category_col, id_col)
    summary = dataset_stats(dataset)
    read = summary.pop("read")
    categories = summary.pop("categories")
    overview = Table("statistic", "value", title=f"{dataset.name}{f' ({split})' if split else ''}")
    for key, value in summary.items():
        if value is not None and key not in ("name", "split"):
            overview.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    overview.add_row("repaired rows", f"{read['repaired_rows']} {read['repaired'] or ''}")
    overview.add_row("skipped rows", f"{read['skipped_rows']} {read['skipped'] or ''}")
    console.print(overview)
    columns = sorted(
        {key for counts in categories.values() for key in counts}, key=lambda k: (k != "rows", k)
    )
    share = "unsafe" in columns
    per_category = Table("category", *columns, *(["unsafe share"] if share else []), title="per category")
    for category, counts in categories.items():
        cells = [str(counts.get(c, 0)) for c in columns]
        if share:
            cells.append(f"{counts.get('unsafe', 0) / counts['rows']:.1%}")
        per_category.add_row(category, *cells)
    console.print(per_category)
    if json_out:
        atomic_write_json(json_out, {**summary, "read": read, "categories": categories})


@app.command()
def split(
    name: str = typer.Argument(..., help="Dataset name or a file path."),
    out: Path = typer.Option(..., "--out", help="Where to write the split manifest (JSON)."),
    seed: int = typer.Option(0, "--seed"),
    train: float = typer.Option(0.70, "--train"),
    dev: float = typer.Option(0.15, "--dev"),
    test: float = typer.Option(0.15, "--test"),
    stratify: bool = typer.Option(True, "--stratify/--no-stratify", help="Stratify by category."),
    data_dir: str | None = DataDir,
    prompt_col: str = PromptCol,
    response_col: str = ResponseCol,
    label_col: str = LabelCol,
    category_col: str = CategoryCol,
    id_col: str | None = IdCol,
) -> None:
    """Split grouped by prompt (no prompt in two splits), stratified, seeded; write the manifest of ids."""
    dataset = open_dataset(name, data_dir, None, prompt_col, response_col, label_col, category_col, id_col)
    fractions = {k: v for k, v in {"train": train, "dev": dev, "test": test}.items() if v > 0}
    result = split_records(dataset.records, fractions, seed=seed, stratify=stratify, dataset=dataset.name)
    result.save(out)
    table = Table("split", "records", "prompts")
    for split_name, counts in result.manifest["counts"].items():
        table.add_row(split_name, str(counts["records"]), str(counts["groups"]))
    console.print(table)
    console.print(f"manifest written to {out}")


@app.command()
def export(
    name: str = typer.Argument(..., help="Dataset name or a file path."),
    fmt: str = typer.Option("jsonl", "--format", help="jsonl or parquet."),
    out: Path | None = typer.Option(None, "--out", help="Output file (default for jsonl: standard output)."),
    split: str | None = typer.Option(None, "--split", help="Split of a task or HarmBench set."),
    manifest: Path | None = typer.Option(None, "--manifest", help="Split manifest to select records from."),
    subset: str | None = typer.Option(None, "--subset", help="Which split of --manifest to export."),
    dedup: str | None = typer.Option(
        None, "--dedup", help="Drop repeated (prompt, response) pairs: any-unsafe or majority."
    ),
    data_dir: str | None = DataDir,
    prompt_col: str = PromptCol,
    response_col: str = ResponseCol,
    label_col: str = LabelCol,
    category_col: str = CategoryCol,
    id_col: str | None = IdCol,
) -> None:
    """Export records as JSONL or Parquet, optionally one split of a manifest and deduplicated."""
    from seawall.io import atomic_write_bytes

    dataset = open_dataset(name, data_dir, split, prompt_col, response_col, label_col, category_col, id_col)
    records = dataset.records
    if manifest:
        if not subset:
            raise SeawallError("--manifest needs --subset (train, dev or test)")
        subsets = apply_manifest(records, load_manifest(manifest))
        if subset not in subsets:
            raise SeawallError(f"{manifest} has no split {subset!r}; it has {sorted(subsets)}")
        records = subsets[subset]
    if dedup:
        records, report = deduplicate(records, rule=dedup)  # type: ignore[arg-type]
        Console(stderr=True).print(
            f"deduplicated: {report.removed} repeated rows removed; {report.conflicting_groups} groups disagreed "
            f"on the label ({report.relabelled_unsafe} kept as unsafe by the {dedup} rule)"
        )
    rows = [record.to_dict() for record in records]
    if fmt == "jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if out:
            atomic_write_bytes(out, text.encode("utf-8"))
        else:
            sys.stdout.write(text)
    elif fmt == "parquet":
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        if not out:
            raise SeawallError("--format parquet needs --out FILE")
        for row in rows:
            # Parquet needs one schema: free-form dicts are stored as JSON text.
            for key in ("metadata", "annotator_labels"):
                if key in row:
                    row[key] = json.dumps(row[key], ensure_ascii=False)
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows), buffer)
        atomic_write_bytes(out, buffer.getvalue())
    else:
        raise SeawallError(f"unknown --format {fmt!r}; use jsonl or parquet")
    if out:
        Console(stderr=True).print(f"{len(rows)} records written to {out}")


@app.command()
def taxonomy(
    out: Path | None = typer.Option(None, "--out", help="Write the Markdown here instead of printing."),
) -> None:
    """Print (or write) the hazard taxonomy and every dataset's category mapping."""
    from seawall.data.taxonomy import mapping_markdown
    from seawall.io import atomic_write_text

    text = mapping_markdown()
    if out:
        atomic_write_text(out, text)
    else:
        sys.stdout.write(text)


@app.command()
def fetch(
    url: str | None = typer.Option(
        None, "--url", help="Mirror URL (http(s):// or file://) of SecureBreak.csv."
    ),
) -> None:
    """Download SecureBreak into the cache, verified by sha256 (for machines without shared/data)."""
    from seawall.data.sources.responses import SECUREBREAK_URL, securebreak_file

    path = securebreak_file(Path("/nonexistent"), url or SECUREBREAK_URL)
    console.print(f"SecureBreak cached at {path}")
