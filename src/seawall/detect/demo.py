"""The detector part of the main job: provision MiniLM, train + calibrate on the v2 mix, evaluate, print.

`run()` trains the recipe of configs/detector-encoder-v4-fast.yaml (eleven sources: jailbreak responses, dangerous
advice, unsafe dialogue, safe non-refusal answers, policy texts, benign compliance, refusals, non-answers and a small
model's attempts at harmful requests; one
epoch, bf16 autocast where the CPU has it) at 128 tokens, so it fits in about a quarter of an hour on 2 cores, with a progress
bar. It calibrates on the mixed dev split (every source), picks the source-balanced threshold, and prints the
SecureBreak test metrics, the per-category table, and the flag rates on held-out benign answers and refusals.
"""

from __future__ import annotations

from typing import Any

from seawall.detect.data import RESPONSE_SETS, DataMix
from seawall.detect.pipeline import TrainConfig, run_training

DEMO_PARAMS: dict[str, Any] = {
    "base_model": "all-minilm-l6-v2",
    "max_length": 128,
    "prompt_tokens": 32,
    "lr": 5e-5,
    "epochs": 1,
    "freeze_layers": 0,
    "batch_size": 16,
    "eval_every": 260,
    "patience": 2,
    "seed": 0,
    "calibration": "temperature",
    "threshold_strategy": "source_balanced",
}


def demo_config(output: str, max_steps: int | None = None, max_rows: int | None = None) -> TrainConfig:
    """The demo's run config (also a template for your own); `max_rows` caps dev and eval rows (smoke runs)."""
    params = dict(DEMO_PARAMS)
    if max_steps:
        params["max_steps"] = max_steps
    return TrainConfig(
        name="demo",
        backend="encoder",
        params=params,
        data=DataMix(
            sets=list(RESPONSE_SETS),  # the v4 mix: configs/detector-encoder-v4-fast.yaml explains each cap
            max_train_rows={"gptfuzz": 3000, "diasafety": 4000},
            dev_rows_per_source=max_rows or 250,
            benign_compliant=1000,
            harmful_refusals=400,
            non_answers=600,
            attempts=600,
        ),
        output=output,
        eval_sets=["securebreak:test", "alpaca:test", "refusals:test"],
        n_boot=200,
        eval_max_rows=max_rows,
        overwrite=True,
    )


def run(
    data_dir: str | None = None,
    output: str | None = None,
    max_steps: int | None = None,
    max_rows: int | None = None,
) -> dict:
    """Train, calibrate, save and evaluate the default detector; print the per-category table; return the summary.

    By default the detector is saved where the guard and the evaluation harness look for it.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from seawall.detect import default_detector_path
    from seawall.models import resolve_model

    output = output or str(default_detector_path())

    console = Console()
    console.rule("detector: provisioning all-MiniLM-L6-v2")
    console.print(f"base model at {resolve_model(DEMO_PARAMS['base_model'])}")
    console.rule("detector: training on the v4 mix (eleven sources)")
    summary = run_training(demo_config(output, max_steps, max_rows), data_dir)
    sb = summary["eval"]["securebreak:test"]
    m, ci = sb["metrics"], sb["ci95"]
    console.print(
        f"saved {output} ({summary['detector_id']}) in {summary['train_seconds']} s; threshold "
        f"{summary['threshold']:.3f} (source-balanced on dev), calibration T={summary['calibrator'].get('temperature', 1):.2f}"
    )
    console.print(
        f"SecureBreak test (n={sb['n']}): F1 {m['f1']:.3f} [{ci['f1'][0]:.3f}, {ci['f1'][1]:.3f}], "
        f"AUROC {m['auroc']:.3f} [{ci['auroc'][0]:.3f}, {ci['auroc'][1]:.3f}], accuracy {m['accuracy']:.3f}, "
        f"ECE {m['ece']:.3f}"
    )
    benign = summary["eval"]["alpaca:test"]["metrics"]
    refusals = summary["eval"]["refusals:test"]["metrics"]
    console.print(
        f"held-out benign Alpaca answers flagged unsafe: {benign['flag_rate']:.1%}; held-out refusals flagged: "
        f"{refusals['flag_rate']:.1%} (lower is better)"
    )
    rows = sb["per_category"] or []
    # A light box and short headers so the whole table, category names included, fits an 80-column terminal.
    table = Table(title="per category", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    table.add_column("category", no_wrap=True)
    for header in ("n", "unsafe", "acc.", "prec.", "recall", "F1", "AUROC"):
        table.add_column(header, no_wrap=True, justify="right")
    for row in rows:
        table.add_row(
            row["category"],
            str(row["n"]),
            str(row["n_unsafe"]),
            *(f"{row[k]:.3f}" for k in ("accuracy", "precision", "recall", "f1", "auroc")),
        )
    console.print(table)
    return summary
