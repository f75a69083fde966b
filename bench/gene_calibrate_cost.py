"""Cost of SafeGene calibration vs one epoch of safety fine-tuning of the same target, in one run (a ratio).

Target T: a small random Llama built here (default), or `--model` (a folder or a packaged name such as
smollm2-135m-instruct). The safety adapter is τ = A − D for A, D = T plus small noise (a quickly degraded copy; its
content does not change the cost). Both jobs run on the same machine, same threads, each in a fresh process (wall
time after the model is loaded, and peak RSS above the job's start):
  - calibration: `seawall.gene.calibration` with the default CalibrateConfig on 32 harmful (HarmBench val) + 32 benign
    (Alpaca) prompts, all layers selected (the worst case for the prefix cache), reported as preparation (T's greedy
    retain answers, prefix states, T's log-probs) + fitting; the ratio quoted is their sum over the SFT epoch;
  - one epoch of full safety fine-tuning of T (AdamW, lr 3e-5, batch 8) on `--sft-examples` (480) examples: AdvBench
    prompts → refusal templates and Alpaca instructions → their answers, half and half (as the CPU probe in
    FINDINGS.md aligned SmolLM2).
`--sft-from FILE` reuses the SFT job's record (the JSON line printed by `--job sft`) from an earlier run on the same
model, marked as such in the output, when one SFT epoch is too slow to repeat (SmolLM2 on a shared CPU).
`--rounds N` runs the two jobs N times, alternating which goes first, and reports each job's median-time round, so
load from other jobs hits both alike. The 1-, 5- and 15-minute load averages before and after are recorded and
printed, with a loud warning when the machine was busy at the start.
Writes JSON (default docs/results/gene_calibrate_cost.json) and prints a table.

    python bench/gene_calibrate_cost.py --threads 1
    python bench/gene_calibrate_cost.py --threads 1 --model smollm2-135m-instruct \
        --out docs/results/gene_calibrate_cost_smollm2.json
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def byte_tokenizer():
    """A byte-level tokenizer (259 symbols) for random models without a vocabulary of their own."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    for special in ("<s>", "</s>", "<pad>"):
        vocab[special] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def build_models(work: Path, model: Path | None, hidden: int, layers: int) -> tuple[dict[str, Path], int]:
    """Save T (given or random) and A, D = T ± small noise on block linears into `work`; return paths, #params."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    if model is None:
        config = LlamaConfig(
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=max(1, hidden // 64),
            num_key_value_heads=max(1, hidden // 128),
            intermediate_size=4 * hidden,
            vocab_size=259,
            max_position_embeddings=512,
            bos_token_id=256,
            eos_token_id=257,
            pad_token_id=258,
        )
        target = LlamaForCausalLM(config).eval()
        tokenizer = byte_tokenizer()
    else:
        target = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
        tokenizer = AutoTokenizer.from_pretrained(model)
    paths = {}
    for name, scale in (("T", 0.0), ("A", 1e-3), ("D", -1e-3)):
        if scale:
            with torch.no_grad():
                for pname, p in target.named_parameters():
                    if pname.endswith("proj.weight"):
                        p.add_(scale * torch.randn_like(p))
        target.save_pretrained(work / name)
        tokenizer.save_pretrained(work / name)
        paths[name] = work / name
    return paths, sum(p.numel() for p in target.parameters())


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> int:
    """Reset the kernel's resident high-water mark (VmHWM) and return the current RSS in KiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status("VmRSS")


def sft_epoch(target: Path, n_examples: int, batch_size: int, max_length: int) -> dict:
    """One epoch of full fine-tuning on refusals + benign answers; returns seconds and steps."""
    import torch

    from seawall.data import load
    from seawall.gene.modeling import build_batch, load_causal_lm, load_tokenizer, prompt_ids, target_ids
    from seawall.gene.shots import refusal_targets

    tokenizer = load_tokenizer(target)
    half = n_examples // 2
    harmful = [r.prompt for r in load("advbench").records[:half]]
    alpaca = load("alpaca").records[:half]
    examples = list(zip(harmful, refusal_targets(half, 0), strict=True))
    examples += [(r.prompt, r.response) for r in alpaca]
    random.Random(0).shuffle(examples)
    loading = time.perf_counter()
    model = load_causal_lm(target)
    model.requires_grad_(True)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-5)
    started = time.perf_counter()
    steps = 0
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        batch = build_batch(
            tokenizer,
            [prompt_ids(tokenizer, p) for p, _ in chunk],
            [target_ids(tokenizer, t) for _, t in chunk],
            max_length,
        )
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"]
        )
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        steps += 1
    return {
        "seconds": time.perf_counter() - started,
        "wall_with_loading_seconds": time.perf_counter() - loading,
        "steps": steps,
        "examples": len(examples),
    }


def run_job(job: str, work: Path, args: argparse.Namespace) -> dict:
    """One job in this (fresh) process: its wall time and its peak RSS above the RSS at its start."""
    import torch

    torch.set_num_threads(args.threads)
    from seawall.gene import CalibrateConfig, SafetyAdapter, calibrate, load_shots

    if job == "calibrate":
        adapter = SafetyAdapter.load(work / "adapter")
        shots = load_shots(n_harmful=32, n_benign=32)
        config = CalibrateConfig()
        base = _reset_peak()
        started = time.perf_counter()
        result = calibrate(adapter, work / "T", shots, config, progress=False)
        return {
            # Quoted against the SFT epoch, which is timed after its model is loaded: preparation + fitting.
            "seconds": result.prepare_seconds + result.fit_seconds,
            "prepare_seconds": result.prepare_seconds,
            "fit_seconds": result.fit_seconds,
            "wall_with_loading_seconds": time.perf_counter() - started,
            "selected_layers": adapter.manifest.selected_layers,
            "cached_prefix": result.cached_prefix,
            "first_layer": result.first_layer,
            "peak_above_start_mib": (_status("VmHWM") - base) / 1024,
            "epochs": result.epochs,
            "groups": len(result.coefficients),
            "shots": {"harmful": 32, "benign": 32},
            "initial_loss": result.initial_loss,
            "final_loss": result.final_loss,
            "config": config.model_dump(mode="json"),
        }
    base = _reset_peak()
    out = sft_epoch(work / "T", args.sft_examples, args.batch_size, args.max_length)
    out["peak_above_start_mib"] = (_status("VmHWM") - base) / 1024
    return out


def _run_in_fresh_process(job: str, work: Path, args: argparse.Namespace) -> dict:
    """One job in a new interpreter; its JSON record."""
    cmd = [sys.executable, __file__, "--job", job, "--work", str(work), "--threads", str(args.threads)]
    cmd += ["--sft-examples", str(args.sft_examples), "--batch-size", str(args.batch_size)]
    cmd += ["--max-length", str(args.max_length)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    """Time calibration and one SFT epoch on the same target (each in a fresh process); write the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="real model for T: folder or packaged name (default: random)"
    )
    parser.add_argument(
        "--select",
        choices=["all", "upper-half"],
        default="all",
        help="layers the adapter selects: all (worst case for the prefix cache) or the upper half",
    )
    parser.add_argument(
        "--sft-from",
        type=Path,
        default=None,
        help="reuse the SFT job record (JSON printed by `--job sft`) of an earlier run on the same model",
    )
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--sft-examples", type=int, default=480)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="torch threads for both jobs")
    parser.add_argument("--rounds", type=int, default=1, help="runs of each job, alternating their order")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "gene_calibrate_cost.json")
    parser.add_argument("--job", choices=["calibrate", "sft"], help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    if args.job:
        print(json.dumps(run_job(args.job, args.work, args)))
        return
    from seawall.detect.bench import load_average, warn_if_busy
    from seawall.gene import ExtractConfig, extract

    load_before = load_average()
    busy = warn_if_busy(load_before, "calibration cost bench")
    model = None
    if args.model:
        from seawall.models import resolve_model

        model = Path(args.model) if Path(args.model).exists() else Path(resolve_model(args.model))
    work = Path(tempfile.mkdtemp(prefix="seawall-bench-cal-"))
    try:
        paths, n_params = build_models(work, model, args.hidden, args.layers)
        adapter = extract(
            paths["A"], paths["D"], work / "adapter", ExtractConfig(checksums=False), progress=False
        )
        if args.select == "upper-half":
            n_layers = adapter.manifest.num_layers
            adapter.manifest.selected_layers = list(range(n_layers // 2, n_layers))
            adapter.save_manifest()
        jobs = {}
        if args.sft_from:
            jobs["sft"] = {**json.loads(args.sft_from.read_text()), "reused_from_earlier_run": True}
        to_run = ["calibrate", "sft"] if not args.sft_from else ["calibrate"]
        rounds: dict[str, list[dict]] = {job: [] for job in to_run}
        for round_ in range(args.rounds):
            for job in to_run[round_ % len(to_run) :] + to_run[: round_ % len(to_run)]:
                rounds[job].append(_run_in_fresh_process(job, work, args))
        for job, records in rounds.items():
            jobs[job] = {
                **sorted(records, key=lambda r: r["seconds"])[len(records) // 2],
                "rounds": len(records),
            }
            jobs[job]["seconds_all_rounds"] = [r["seconds"] for r in records]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    cal, sft = jobs["calibrate"], jobs["sft"]
    load_after = load_average()
    record = {
        "benchmark": "gene_calibrate_cost",
        "model": str(args.model)
        if args.model
        else f"random llama hidden {args.hidden} x {args.layers} layers",
        "parameters": n_params,
        "calibration": cal,
        "sft_epoch": {**sft, "batch_size": args.batch_size, "lr": 3e-5, "max_length": args.max_length},
        "ratio_calibration_over_sft_epoch": cal["seconds"] / sft["seconds"],
        "ratio_fit_only_over_sft_epoch": cal["fit_seconds"] / sft["seconds"],
        "ratio_memory_calibration_over_sft": cal["peak_above_start_mib"]
        / max(sft["peak_above_start_mib"], 1e-9),
        "trainable_parameters": {"calibration": cal["groups"], "sft": n_params},
        "threads": args.threads,
        "load_avg_before": load_before,
        "load_avg_after": load_after,
        "busy_at_start": busy,
    }
    print(f"model: {record['model']} ({n_params / 1e6:.1f}M parameters), {args.threads} thread(s)")
    print(f"{'job':<28}{'seconds':>10}{'trainable':>14}{'peak MiB':>10}")
    for label, key in (
        ("calibration: preparation", "prepare_seconds"),
        ("calibration: fitting", "fit_seconds"),
    ):
        print(f"{label:<28}{cal[key]:>10.1f}")
    print(
        f"{'calibration total (32+32)':<28}{cal['seconds']:>10.1f}{cal['groups']:>14}{cal['peak_above_start_mib']:>10.0f}"
    )
    print(
        f"{'safety SFT, one epoch':<28}{sft['seconds']:>10.1f}{n_params:>14}{sft['peak_above_start_mib']:>10.0f}"
    )
    print(f"ratio calibration / SFT epoch: {record['ratio_calibration_over_sft_epoch']:.3f}")
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")
    if busy:
        print("!! the machine was busy at the start: times are upper bounds, the ratio holds better")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
