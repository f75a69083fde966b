"""`seawall detect …`: train, evaluate, stream-score, benchmark and report harmful-response detectors."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, BinaryIO, TextIO

import typer

from seawall.data.cli import CategoryCol, IdCol, LabelCol, PromptCol, ResponseCol
from seawall.errors import SeawallError

app = typer.Typer(
    help="Harmful-response detectors: train, eval, predict, bench, report.", no_args_is_help=True
)


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


@app.command()
def train(
    config: Path = typer.Option(..., "--config", "-c", help="YAML run config (see configs/detector-*.yaml)."),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Shared data folder (default ../shared/data)."
    ),
    eval_only: bool = typer.Option(
        False,
        "--eval-only",
        help="Evaluate the detector an earlier run of this config saved (no training): after an interrupted "
        "evaluation, or with other eval_sets.",
    ),
) -> None:
    """Train, calibrate on dev, save and evaluate a detector described by a YAML config."""
    from rich.console import Console

    from seawall.detect.metrics import format_table
    from seawall.detect.pipeline import TrainConfig, run_training

    _quiet_transformers()
    cfg = TrainConfig.from_yaml(config)
    summary = run_training(cfg, data_dir, eval_only=eval_only)
    rows = [{"data": name, "n": e["n"], **e["metrics"]} for name, e in summary["eval"].items()]
    console = Console()
    done = "evaluated the saved" if eval_only else "saved"
    console.print(f"{done} {cfg.output} ({summary['detector_id']}), trained in {summary['train_seconds']} s")
    typer.echo(
        format_table(rows, ["data", "n", "accuracy", "precision", "recall", "f1", "fpr", "auroc", "ece"])
    )


@app.command("eval")
def evaluate(
    model: str = typer.Option(..., "--model", "-m", help="A saved detector folder."),
    data: str = typer.Option(
        "securebreak:test",
        "--data",
        "-d",
        help="NAME[:SPLIT] (securebreak, gptfuzz, alpaca, refusals) or a CSV/TSV/JSONL/JSON/Parquet FILE.",
    ),
    out: str | None = typer.Option(None, "--out", "-o", help="Folder for report.json and the PNG plots."),
    operating_point: str | None = typer.Option(
        None, "--operating-point", help="Threshold to use: recall, f1, default or a number (default: stored)."
    ),
    n_boot: int = typer.Option(
        1000, "--n-boot", help="Bootstrap resamples for the 95% intervals (0 = none)."
    ),
    data_dir: str | None = typer.Option(None, "--data-dir"),
    prompt_col: str = PromptCol,
    response_col: str = ResponseCol,
    label_col: str = LabelCol,
    category_col: str = CategoryCol,
    id_col: str | None = IdCol,
) -> None:
    """Evaluate a saved detector: metrics with 95% CIs, confusion matrix, per-category table, plots."""
    from pathlib import Path as _Path

    from rich.console import Console

    from seawall.data.generic import ColumnMap
    from seawall.detect.base import load_detector
    from seawall.detect.data import eval_records
    from seawall.detect.metrics import format_table
    from seawall.detect.pipeline import evaluate_detector, summary_rows
    from seawall.io import atomic_write_json

    _quiet_transformers()
    detector = load_detector(model)
    if operating_point:
        detector.set_operating_point(operating_point)
    columns = ColumnMap(prompt_col, response_col or None, label_col or None, category_col or None, id_col)
    name, records, read_report = eval_records(data, data_dir, columns)
    report = evaluate_detector(detector, records, name, _Path(out) if out else None, n_boot)
    report["read_report"] = read_report
    if out:
        atomic_write_json(_Path(out) / "report.json", report)
    console = Console()
    console.print(
        f"{name}: {report['n']} labelled rows, threshold {report['threshold']:.4f} ({detector.detector_id})"
    )
    if read_report.get("skipped_rows") or read_report.get("repaired_rows"):
        console.print(
            f"[yellow]read {read_report['rows']} rows: {read_report['skipped_rows']} skipped "
            f"{read_report['skipped']}, {read_report['repaired_rows']} repaired {read_report['repaired']}[/yellow]"
        )
    typer.echo(format_table(summary_rows(report), ["metric", "value", "ci95"]))
    console.print(f"confusion: {report['confusion']}")
    if report.get("per_category"):
        typer.echo(
            format_table(
                report["per_category"],
                ["category", "n", "n_unsafe", "accuracy", "recall", "f1", "fpr", "auroc"],
            )
        )
    _print_category(console, report.get("category"))


def _print_category(console: Any, category: dict[str, Any] | None) -> None:
    import math

    from seawall.detect.metrics import format_table

    if category is None:
        console.print("risk categories: this detector has no category model")
        return
    if not category["n"]:
        console.print("risk categories: no unsafe row with a known hazard to score them on")
        return
    low, high = category["ci95"]
    interval = "" if math.isnan(low) else f" [{low:.3f}, {high:.3f}]"  # NaN with --n-boot 0
    console.print(
        f"risk-category accuracy on {category['n']} unsafe rows ({category['n_prompts']} prompts): "
        f"{category['accuracy']:.3f}{interval}; always-majority would score {category['majority_share']:.3f}"
    )
    typer.echo(format_table(category["per_category"], ["category", "n", "correct", "accuracy"]))


RUNTIMES = {
    "torch": ("torch", False),
    "torch-int8": ("torch", True),
    "onnx": ("onnx", False),
    "onnx-int8": ("onnx", True),
}


@app.command()
def predict(
    model: str = typer.Option(..., "--model", "-m", help="A saved detector folder."),
    batch_size: int = typer.Option(
        64, "--batch-size", help="Rows scored together (memory stays bounded by it)."
    ),
    operating_point: str | None = typer.Option(None, "--operating-point"),
    runtime: str | None = typer.Option(
        None, "--runtime", help="Encoder only: torch (default), onnx, onnx-int8 or torch-int8 (see bench)."
    ),
    input: str | None = typer.Option(
        None,
        "--input",
        "-i",
        help="JSONL or Parquet file: a path or a URI pyarrow reads (s3://…). Default: stdin.",
    ),
    output: str | None = typer.Option(
        None, "--output", "-o", help="A .parquet or .jsonl file (with --input)."
    ),
    batch_engine: str = typer.Option(
        "local", "--engine", help="local (this process) or ray (an actor pool; needs seawall[scale])."
    ),
    address: str | None = typer.Option(
        None, "--address", help="Ray cluster to join (HOST:PORT or auto); default: a local Ray on all cores."
    ),
    workers: int | None = typer.Option(
        None, "--workers", help="Ray actors (default: one per CPU of the cluster)."
    ),
    prompt_col: str = typer.Option("prompt", "--prompt-col", help="Prompt field (with --input)."),
    response_col: str = typer.Option("response", "--response-col", help="Response field (with --input)."),
    id_col: str | None = typer.Option(
        None, "--id-col", help="Id field copied to the output (default: the row number)."
    ),
) -> None:
    """Score rows: JSONL stdin → stdout, or `--input FILE --output FILE` (one row per input row, in order:
    row, id, p_unsafe, unsafe, category, error), here or on Ray with `--engine ray`."""
    from seawall.detect.base import load_detector

    _quiet_transformers()
    detector = load_detector(model)
    if runtime:
        if detector.backend != "encoder" or runtime not in RUNTIMES:
            raise SeawallError(
                f"--runtime {runtime!r} needs an encoder detector and one of {', '.join(RUNTIMES)}; "
                f"{model} is a {detector.backend!r} detector"
            )
        engine, int8 = RUNTIMES[runtime]
        detector.set_params(runtime=engine, quantize=int8)
    if operating_point:
        detector.set_operating_point(operating_point)
    if input or output or batch_engine != "local":
        from seawall.detect.batch import Columns, DetectorSpec, predict_file

        if not (input and output):
            raise SeawallError("--input and --output go together (and --engine ray needs both)")
        params = (("runtime", engine), ("quantize", int8)) if runtime else ()
        spec = DetectorSpec(model, operating_point, params)
        result = predict_file(
            input,
            output,
            detector if batch_engine == "local" else spec,
            Columns(prompt_col, response_col, id_col),
            batch_engine,
            batch_size,
            address,
            workers,
        )
        _print_bad_rows(result)
        typer.echo(
            f"scored {result['scored']} rows ({result['unsafe']} unsafe), {result['bad']} bad rows "
            f"→ {result['output']}",
            err=True,
        )
        return
    counts = stream_predict(detector, sys.stdin.buffer, sys.stdout, batch_size)
    typer.echo(f"scored {counts['scored']} rows, {counts['bad']} bad rows", err=True)


def stream_predict(detector: Any, stream: BinaryIO, out: TextIO, batch_size: int = 64) -> dict[str, int]:
    """Read JSONL rows, score them in batches of `batch_size`, write one JSON line per input line, in order.

    A bad row (invalid UTF-8 or JSON, missing response) yields {"line": N, "error": …} in its place; the rest of
    its batch is still scored. Memory is bounded by one batch, so the input can be arbitrarily long.
    """
    from seawall.detect.data import iter_jsonl, row_to_record
    from seawall.errors import DataError

    counts = {"scored": 0, "bad": 0}
    pending: list[tuple[int, dict[str, Any] | None, Any]] = []

    def flush() -> None:
        good = [(line, rec) for line, _, rec in pending if not isinstance(rec, str)]
        scores = detector.score_unsafe([rec for _, rec in good]) if good else []
        categories = detector.predict_category([rec for _, rec in good], scores=scores) if good else []
        by_line = {line: (float(s), c) for (line, _), s, c in zip(good, scores, categories, strict=True)}
        for line, _, rec in pending:
            if isinstance(rec, str):
                row = {"line": line, "error": rec}
                counts["bad"] += 1
            else:
                p, category = by_line[line]
                row = {
                    "line": line,
                    "id": rec.id,
                    "p_unsafe": round(p, 6),
                    "unsafe": p >= detector.threshold_,
                    "category": category,
                    "detector_id": detector.detector_id,
                }
                counts["scored"] += 1
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
        out.flush()
        pending.clear()

    for line, obj, error in iter_jsonl(stream):
        if error is None:
            try:
                record: Any = row_to_record(obj, f"line-{line}")
            except DataError as problem:
                record = str(problem)
        else:
            record = error
        pending.append((line, obj, record))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    return counts


def _print_bad_rows(report: dict[str, Any]) -> None:
    from rich.console import Console

    console = Console(stderr=True)
    if report["blank_lines"]:
        console.print(f"[yellow]{report['blank_lines']} blank lines skipped[/yellow]")
    if report["bad"]:
        console.print(f"[yellow]{report['bad']} bad rows {report['bad_by_reason']}; first:[/yellow]")
        for bad in report["bad_rows"][:5]:
            console.print(f"[yellow]  row {bad['row']}: {bad['reason']} ({bad['error']})[/yellow]")


@app.command("filter")
def filter_(
    data: str = typer.Argument(
        ..., help="A fine-tuning set: JSONL, Parquet (path or URI), CSV, TSV or JSON file, or a dataset name."
    ),
    detector: str = typer.Option(..., "--detector", "-m", help="A saved detector folder."),
    out: str = typer.Option(
        ..., "--out", "-o", help="The clean set: .jsonl (or .parquet for a Parquet input)."
    ),
    batch_engine: str = typer.Option("local", "--engine", help="local or ray (needs seawall[scale])."),
    address: str | None = typer.Option(None, "--address", help="Ray cluster to join (HOST:PORT or auto)."),
    workers: int | None = typer.Option(None, "--workers", help="Ray actors (default: one per CPU)."),
    batch_size: int = typer.Option(64, "--batch-size", help="Rows scored together."),
    operating_point: str | None = typer.Option(None, "--operating-point"),
    prompt_col: str = typer.Option("prompt", "--prompt-col", help="Prompt field of a file."),
    response_col: str = typer.Option("response", "--response-col", help="Response field of a file."),
    split: str | None = typer.Option(None, "--split", help="Split of a dataset."),
    data_dir: str | None = typer.Option(None, "--data-dir"),
) -> None:
    """Drop the pairs the detector judges unsafe: CLEAN, CLEAN.dropped.jsonl (for review), CLEAN.bad.jsonl, and
    CLEAN.report.json with kept/dropped counts per category."""
    from seawall.detect.batch import Columns, DetectorSpec, filter_file
    from seawall.detect.metrics import format_table

    _quiet_transformers()
    spec = DetectorSpec(detector, operating_point)
    report = filter_file(
        data,
        out,
        spec,
        Columns(prompt_col, response_col),
        batch_engine,
        batch_size,
        address,
        workers,
        data_dir,
        split,
    )
    _print_bad_rows(report)
    rows = [{"category": c, **counts} for c, counts in report["per_category"].items()]
    typer.echo(format_table(rows, ["category", "kept", "dropped"]))
    outputs = report["outputs"]
    typer.echo(
        f"kept {report['kept']}, dropped {report['dropped']}, bad {report['bad']} of {report['rows']} rows → "
        f"{outputs['clean']} (dropped: {outputs['dropped']}, bad: {outputs['bad']}, report: {outputs['report']})"
    )


@app.command()
def bench(
    model: str = typer.Option(..., "--model", "-m", help="A saved encoder detector folder."),
    n: int = typer.Option(256, "--n", help="Responses sampled from SecureBreak (real length distribution)."),
    out: str = typer.Option("docs/results/detector/bench.json", "--out", "-o", help="JSON result file."),
    quantize: bool = typer.Option(True, "--quantize/--no-quantize", help="Also measure dynamic int8."),
    onnx: bool = typer.Option(
        True, "--onnx/--no-onnx", help="Also measure ONNX Runtime (needs seawall[fast])."
    ),
    bf16: bool | None = typer.Option(
        None,
        "--bf16/--no-bf16",
        help="Measure the bf16 variants (default: only where the CPU has bf16 units; --bf16 elsewhere measures "
        "torch's emulation).",
    ),
    data_dir: str | None = typer.Option(None, "--data-dir"),
) -> None:
    """Throughput and p50/p95 latency at batch 1 and 32: fast path vs a naive padded pipeline, same run."""
    from seawall.detect.bench import print_bench, run_bench

    _quiet_transformers()
    result = run_bench(model, n=n, quantize=quantize, data_dir=data_dir, out=Path(out), onnx=onnx, bf16=bf16)
    print_bench(result)


@app.command()
def report(
    results: str = typer.Option("docs/results/detector", "--results", help="Folder of run summaries (JSON)."),
    out: str = typer.Option("docs/results/detector.md", "--out", "-o", help="Markdown file to write."),
) -> None:
    """Regenerate docs/results/detector.md from the JSON written by train/eval/bench."""
    from seawall.detect.report import write_report

    path = write_report(Path(results), Path(out))
    typer.echo(f"wrote {path}")


@app.command()
def demo(
    data_dir: str | None = typer.Option(None, "--data-dir"),
    output: str | None = typer.Option(
        None, "--output", help="Where the detector is saved (default: the guard's default detector folder)."
    ),
) -> None:
    """Provision MiniLM, train + calibrate the default detector on SecureBreak, evaluate, print per category."""
    from seawall.detect.demo import run

    _quiet_transformers()
    run(data_dir=data_dir, output=output)
