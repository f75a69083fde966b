"""Optimizer-step time of the two training loops in float32 and under bf16 autocast, interleaved, on this machine.

Issue 12 asks for bf16 autocast (fp32 master weights) at ≥ 1.5× the speed of fp32. Whether it is faster depends on
the CPU (AMX, AVX512-BF16 or neither), so this bench measures it per machine. Two workloads, each a full optimizer
step (forward, backward, gradient clipping, AdamW) run by the loop's own step function, so the bench times what the
loop runs:
- `encoder`: the detector's fine-tuning step (`seawall.detect.training.optimizer_step`): all-MiniLM-L6-v2 with a
  fresh 2-way head, cross-entropy on a class-balanced batch, AdamW with the encoder backend's default lr and weight
  decay, batch 16 × 128 tokens;
- `lora`: the lab's SFT step (`seawall.lab.train.optimizer_step`, without the learning-rate schedule):
  SmolLM2-135M-Instruct with PEFT LoRA on every block linear, the loss on the reply tokens, the optimizer settings
  and batch shape (8 × 192 tokens) of the SmolLM2 experiment's align recipe (configs/smollm2-135m.yaml).
Each batch is real SecureBreak (prompt, response) pairs, drawn with a fixed seed among those long enough to fill the
sequence length, so every row is exactly that many tokens and no padding is timed.

The float32 and the bf16 variant start from the same weights (a copy) and each has its own optimizer. Their steps
alternate (fp32, bf16, fp32, bf16, ...): WARMUP_STEPS each first, then `--steps` timed ones each, so load from other
jobs hits both alike and the speed-up (median fp32 / median bf16 seconds per step) compares the same minutes. The
first step of both sees the same weights, batch and dropout seed: the relative difference of their losses is the
sanity check that autocast computes the same loss. On a CPU without bf16 units the bf16 variant is skipped (the
training loops fall back to fp32 there) unless `--bf16` forces it, with torch emulating bf16.
The machine (CPU model, matrix instruction sets, bf16 units, CPU count) is recorded as `seawall detect bench` records
it, with the 1-, 5- and 15-minute load averages before and after and a loud warning when it was busy at the start.

    PYTHONPATH=src .venv/bin/python bench/train_step.py [--steps 6] [--threads 2] [--workloads encoder,lora]
        [--bf16] [--out bench/results/train_step.json]
    PYTHONPATH=src .venv/bin/python scripts/train_step_report.py    # docs/results/train-step.md
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from seawall.benchmarks import load_average, warn_if_busy
from seawall.detect.bench import MATRIX_ISA, cpu_model
from seawall.io import atomic_write_json
from seawall.models import precision

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "bench" / "results" / "train_step.json"
ALIGN_RECIPE = ROOT / "configs" / "smollm2-135m.yaml"
WORKLOADS = ("encoder", "lora")
WARMUP_STEPS = 2
VARIANTS = ("float32", "bfloat16")
SEED = 0
BF16_SKIPPED = "this CPU has no bf16 matrix units ({units}): the training loops run fp32 here; --bf16 measures the emulation"
# First-step losses closer than this (relative) agree: bf16 keeps 8 significant bits (~0.4% per rounding), and the
# loss is a mean over many tokens, so a larger gap means autocast computed something else, not rounding.
LOSS_AGREEMENT = 0.01


@dataclass
class Workload:
    """One training step to time: the model it starts from, its optimizer and the step itself."""

    name: str
    model: Any
    make_optimizer: Callable[[list[Any]], Any]
    # (model, optimizer, trainable parameters, precision) -> the step's loss
    step: Callable[[Any, Any, list[Any], str], float]
    record: dict[str, Any]


def long_pairs(records: Sequence[Any], fits: Callable[[Any], bool], n: int) -> list[Any]:
    """The first `n` records, in a fixed shuffled order, for which `fits` holds (those that fill a batch row)."""
    order = np.random.default_rng(SEED).permutation(len(records))
    picked = []
    for index in order:
        if fits(records[index]):
            picked.append(records[index])
            if len(picked) == n:
                return picked
    raise SystemExit(f"only {len(picked)} of {len(records)} pairs are long enough; {n} are needed")


def encoder_workload(
    model_ref: str, records: Sequence[Any], batch_size: int = 16, seq_len: int = 128
) -> Workload:
    """The detector's fine-tuning step on the encoder backend's base model, with its default optimizer settings."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from seawall.detect.encoder import EncoderDetector
    from seawall.detect.training import TrainSettings, optimizer_step
    from seawall.models import resolve_model
    from seawall.models.load import quiet_transformers

    path = resolve_model(model_ref)
    tokenizer = AutoTokenizer.from_pretrained(path)
    # The pair encoding is cut to seq_len: only pairs that fill it are picked, so every row has seq_len real tokens.
    # Half unsafe, half safe: the loop's "balanced" class weights, n / (2 · n_c), are then all 1.
    pairs = [
        pair
        for label in ("unsafe", "safe")
        for pair in long_pairs(
            [r for r in records if r.label == label],
            lambda r: len(tokenizer(r.prompt, r.response, verbose=False)["input_ids"]) >= seq_len,
            batch_size // 2,
        )
    ]
    encoded = tokenizer(
        [r.prompt for r in pairs],
        [r.response for r in pairs],
        truncation="longest_first",
        max_length=seq_len,
        return_tensors="pt",
    )
    batch = dict(encoded)
    labels = torch.tensor([int(r.label == "unsafe") for r in pairs], dtype=torch.long)
    defaults = EncoderDetector().get_params()
    loss_fn = torch.nn.CrossEntropyLoss()
    torch.manual_seed(SEED)  # the fresh head's initial weights
    with quiet_transformers():  # the load report lists the fresh head as "missing" keys
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=2, use_safetensors=True, trust_remote_code=False
        )
    model.train()

    def make_optimizer(params: list[Any]) -> Any:
        return torch.optim.AdamW(
            [
                {"params": [p for p in params if p.ndim >= 2], "weight_decay": defaults["weight_decay"]},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
            ],
            lr=defaults["lr"],
        )

    def step(model: Any, optimizer: Any, params: list[Any], mode: str) -> float:
        # The encoder backend's forward (EncoderDetector._forward) and the loop's default clipping.
        return optimizer_step(
            lambda b: model(**b).logits,
            batch,
            labels,
            loss_fn,
            optimizer,
            params,
            TrainSettings.grad_clip,
            mode,
        )

    record = {
        "model": model_ref,
        "loop": "seawall.detect.training.train (encoder backend defaults)",
        "batch_size": batch_size,
        "seq_len": seq_len,
        "lr": defaults["lr"],
        "weight_decay": defaults["weight_decay"],
        "labels": {"unsafe": int(labels.sum()), "safe": int(len(labels) - labels.sum())},
    }
    return Workload("encoder", model, make_optimizer, step, record)


def align_train_config() -> Any:
    """The training settings of the SmolLM2 experiment's align recipe (LoRA r16 on every block linear)."""
    from seawall.lab.config import TrainConfig

    experiment = yaml.safe_load(ALIGN_RECIPE.read_text())
    return TrainConfig.model_validate(experiment["align"]["train"])


def lora_workload(model_ref: str, records: Sequence[Any], threads: int) -> Workload:
    """The lab's SFT step: LoRA on the chat model, the loss on the reply tokens, the align recipe's settings."""
    import torch

    from seawall.lab.recipes import resolve_model_dir
    from seawall.lab.train import (
        IGNORE,
        ChatExample,
        encode_example,
        load_causal_lm,
        optimizer_step,
        with_lora,
    )

    config = align_train_config()
    model, tokenizer = load_causal_lm(resolve_model_dir(model_ref), threads)

    def encode(record: Any) -> tuple[list[int], list[int]] | None:
        return encode_example(
            tokenizer, ChatExample.of(record.id, record.prompt, record.response), config.max_length
        )

    # encode_example cuts the reply at max_length: pairs that reach it fill the row, so no padding is timed.
    pairs = long_pairs(
        records,
        lambda r: (item := encode(r)) is not None and len(item[0]) == config.max_length,
        config.batch_size,
    )
    ids, labels = zip(*(encode(r) for r in pairs), strict=True)
    batch = {
        "input_ids": torch.tensor(ids),
        "labels": torch.tensor(labels),
        "attention_mask": torch.ones(len(ids), config.max_length, dtype=torch.long),
    }
    n_tokens = int((batch["labels"][:, 1:] != IGNORE).sum())
    torch.manual_seed(SEED)  # the adapters' initial weights
    model, targets = with_lora(model, config, model_ref)
    model.train()

    def make_optimizer(params: list[Any]) -> Any:
        return torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)

    def step(model: Any, optimizer: Any, params: list[Any], mode: str) -> float:
        # One micro-batch (grad_accum 1) and no scheduler: the learning-rate schedule is left out of the timing.
        return optimizer_step(model, [batch], optimizer, None, mode)

    record = {
        "model": model_ref,
        "loop": f"seawall.lab.train.train (align recipe of {ALIGN_RECIPE.relative_to(ROOT)})",
        "batch_size": config.batch_size,
        "seq_len": config.max_length,
        "lr": config.learning_rate,
        "weight_decay": config.weight_decay,
        "lora": {"r": config.lora_r, "alpha": config.lora_alpha, "targets": targets},
        "reply_tokens": n_tokens,
    }
    return Workload("lora", model, make_optimizer, step, record)


def time_steps(workload: Workload, variants: Sequence[str], steps: int) -> dict[str, Any]:
    """Run WARMUP_STEPS then `steps` timed optimizer steps per variant, alternating variants step by step."""
    import torch

    trainers = {}
    for index, name in enumerate(variants):
        # Every variant starts from the same weights; the first keeps the original to spare one copy.
        model = workload.model if index == 0 else copy.deepcopy(workload.model)
        params = [p for p in model.parameters() if p.requires_grad]
        trainers[name] = (model, workload.make_optimizer(params), params)
    order: list[str] = []
    losses: dict[str, list[float]] = {name: [] for name in variants}
    seconds: dict[str, list[float]] = {name: [] for name in variants}
    for index in range(WARMUP_STEPS + steps):
        for name in variants:
            model, optimizer, params = trainers[name]
            torch.manual_seed(SEED + index)  # the same dropout masks for every variant at this step
            start = time.perf_counter()
            losses[name].append(workload.step(model, optimizer, params, name))
            elapsed = time.perf_counter() - start
            order.append(name)
            if index >= WARMUP_STEPS:
                seconds[name].append(elapsed)
    result: dict[str, Any] = {
        "name": workload.name,
        **workload.record,
        "trainable_parameters": sum(p.numel() for p in trainers[variants[0]][2]),
        "order": order,
        "variants": {
            name: {
                "median_s": float(np.median(seconds[name])),
                "p90_s": float(np.percentile(seconds[name], 90)),
                "step_s": [round(s, 4) for s in seconds[name]],
                "losses": [round(loss, 5) for loss in losses[name]],
            }
            for name in variants
        },
    }
    first = {name: losses[name][0] for name in variants}
    if "bfloat16" in variants:
        fp32, bf16 = result["variants"]["float32"], result["variants"]["bfloat16"]
        result["speedup_bf16_vs_fp32"] = fp32["median_s"] / bf16["median_s"]
        relative = abs(first["bfloat16"] - first["float32"]) / abs(first["float32"])
        agree = relative < LOSS_AGREEMENT
    else:
        result["speedup_bf16_vs_fp32"] = None
        relative = agree = None
    result["first_step_loss"] = {**first, "relative_difference": relative, "agree": agree}
    return result


def machine() -> dict[str, Any]:
    """The machine as `seawall detect bench` records it."""
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "matrix_isa": sorted(MATRIX_ISA & precision.cpu_flags()),
        "bf16_supported": precision.bf16_supported(),
    }


def run_bench(
    workloads: Sequence[str] = WORKLOADS,
    steps: int = 6,
    threads: int = 2,
    bf16: bool = False,
    encoder_model: str = "all-minilm-l6-v2",
    lora_model: str = "smollm2-135m-instruct",
    data_dir: str | None = None,
    out: Path | None = DEFAULT_OUT,
) -> dict[str, Any]:
    """Time the workloads' training steps per variant; returns the result and writes it as JSON to `out`.

    `bf16`: run the bf16 variant even where the CPU has no bf16 units (emulated); otherwise it runs only where
    `seawall.models.precision.bf16_supported()`.
    """
    import peft
    import torch
    import transformers

    from seawall.data import load

    unknown = sorted(set(workloads) - set(WORKLOADS))
    if unknown or not workloads:
        raise SystemExit(
            f"--workloads takes a comma-separated subset of {', '.join(WORKLOADS)}, got {unknown}"
        )
    load_before = load_average()
    busy = warn_if_busy(load_before, "training-step bench")
    torch.set_num_threads(threads)
    native = precision.bf16_supported()
    variants = VARIANTS if native or bf16 else VARIANTS[:1]
    records = load("securebreak", data_dir=data_dir).records
    result: dict[str, Any] = {
        "steps": steps,
        "warmup_steps": WARMUP_STEPS,
        "torch_threads": torch.get_num_threads(),
        "loss_agreement_below": LOSS_AGREEMENT,
        "machine": machine(),
        "load_avg_before": load_before,
        "busy_at_start": busy,
        "bf16": {
            "run": "bfloat16" in variants,
            "forced": bf16,
            "emulated": "bfloat16" in variants and not native,
            "skipped": None
            if "bfloat16" in variants
            else BF16_SKIPPED.format(units=" or ".join(sorted(precision.BF16_FLAGS))),
        },
        "data": "securebreak (prompt, response) pairs filling the sequence length, fixed seed",
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
        },
        "workloads": [],
    }
    for name in workloads:
        if name == "encoder":
            workload = encoder_workload(encoder_model, records)
        else:
            workload = lora_workload(lora_model, records, threads)
        result["workloads"].append(time_steps(workload, variants, steps))
        del workload  # free one model (and its copy) before the next is loaded
    result["load_avg_after"] = load_average()
    if out is not None:
        atomic_write_json(out, result)
    return result


def print_table(result: dict[str, Any]) -> None:
    """Print seconds per step and the speed-up per workload, with the load averages before and after."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    table = Table(title="training step", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    table.add_column("workload", no_wrap=True)
    table.add_column("variant", no_wrap=True)
    for header in ("median s", "p90 s", "bf16 ×fp32", "1st loss", "rel. Δ"):
        table.add_column(header, no_wrap=True, justify="right")
    for workload in result["workloads"]:
        first = workload["first_step_loss"]
        for variant, stats in workload["variants"].items():
            bf16_row = variant == "bfloat16"
            table.add_row(
                workload["name"],
                variant,
                f"{stats['median_s']:.3f}",
                f"{stats['p90_s']:.3f}",
                f"{workload['speedup_bf16_vs_fp32']:.2f}" if bf16_row else "",
                f"{first[variant]:.4f}",
                f"{first['relative_difference']:.1e}" if bf16_row else "",
            )
    console = Console()
    console.print(table)
    machine = result["machine"]
    console.print(
        f"{machine['cpu_model']} ({', '.join(machine['matrix_isa'])}), bf16 units: {machine['bf16_supported']}, "
        f"{result['torch_threads']} torch threads; load average (1, 5, 15 min) before {result['load_avg_before']}, "
        f"after {result['load_avg_after']}"
    )
    if result["bf16"]["skipped"]:
        console.print(f"bf16 variant skipped: {result['bf16']['skipped']}")
    elif result["bf16"]["emulated"]:
        console.print("bf16 variant forced (--bf16) on a CPU without bf16 units: torch emulates it")
    if result["busy_at_start"]:
        console.print(
            "[bold red]the machine was busy at the start: timings are upper bounds, the ratio holds better"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=6, help="timed steps per variant (after 2 warm-up steps each)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated: encoder, lora")
    parser.add_argument(
        "--bf16", action="store_true", help="run the bf16 variant even on a CPU without bf16 units (emulated)"
    )
    parser.add_argument(
        "--encoder-model", default="all-minilm-l6-v2", help="the encoder workload's base model"
    )
    parser.add_argument(
        "--lora-model", default="smollm2-135m-instruct", help="the LoRA workload's chat model"
    )
    parser.add_argument("--data-dir", default=None, help="the shared datasets (default: seawall.data's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON to write")
    args = parser.parse_args(argv)
    if args.steps < 1:
        parser.error("--steps must be at least 1")
    result = run_bench(
        workloads=[w.strip() for w in args.workloads.split(",") if w.strip()],
        steps=args.steps,
        threads=args.threads,
        bf16=args.bf16,
        encoder_model=args.encoder_model,
        lora_model=args.lora_model,
        data_dir=args.data_dir,
        out=args.out,
    )
    print_table(result)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
