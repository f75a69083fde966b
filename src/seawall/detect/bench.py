"""`seawall detect bench`: the encoder's fast paths against a naive transformers pipeline, in the same run.

Inputs are `n` SecureBreak (prompt, response) pairs drawn with a fixed seed from all rows, so the length
distribution is the real one (many short and empty responses, some long ones). For batch sizes 1 and 32:
- naive: `transformers.pipeline("text-classification")` with padding="max_length" (every input padded to the
  detector's max_length), truncation on, default thread settings apart from the shared 2-thread cap;
- fast: the detector's own scoring in fp32 (length-sorted batches, dynamic padding, torch.inference_mode);
- fast-bf16: the same with a bf16 copy of the weights (`precision` auto's choice on CPUs with bf16 units);
- fast-bf16-autocast: fp32 weights under CPU bf16 autocast (the alternative to a bf16 copy);
- fast-int8: the same with dynamic int8 quantization of the linear layers;
- onnx: the same batches scored by ONNX Runtime (in-memory export, all graph optimizations, same thread count);
- onnx-int8: ONNX Runtime with only the feed-forward MatMuls in int8 (per-channel), attention in fp32.
The bf16 variants run by default only on CPUs with bf16 units (elsewhere `precision` falls back to fp32);
`bf16=True` (`--bf16`) runs them anyway, with torch emulating bf16, to measure what that fallback saves. The fast paths split a
batch further where lengths differ by more than 20% (see `length_sorted_batches`): the naive pipeline gets the same
chunks of 1 or 32 rows but pads them to max_length, as a plain pipeline call does.
Latency is per call (one batch); throughput is responses / total seconds. The variants are interleaved chunk by
chunk, so background load affects them alike, and every ratio (vs naive, vs fp32) is between variants of the same
run. Decision agreement is measured against the fp32 fast path at the detector's stored threshold. The 1-, 5- and
15-minute load averages before and after are recorded, with a loud warning when the machine was busy at the start
(1-minute load above BUSY_LOAD): such figures are upper bounds on time.
"""

from __future__ import annotations

import contextlib
import copy
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seawall.benchmarks import BUSY_LOAD, load_average, warn_if_busy
from seawall.detect._torch import setup_torch
from seawall.errors import SeawallError
from seawall.io import atomic_write_json
from seawall.models.load import quiet_transformers
from seawall.models.precision import CPUINFO, autocast, bf16_supported, cpu_flags

BATCH_SIZES = (1, 32)
REFERENCE = "fast"
# The CPU features that decide which number formats run natively (recorded with every bench).
MATRIX_ISA = frozenset({"avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16", "amx_int8"})


def _stats(latencies: list[float], n: int) -> dict[str, float]:
    total = float(sum(latencies))
    return {
        "responses_per_s": n / total if total else float("nan"),
        "p50_ms": float(np.percentile(latencies, 50) * 1000),
        "p95_ms": float(np.percentile(latencies, 95) * 1000),
        "total_s": total,
    }


def run_bench(
    model_dir: str,
    n: int = 256,
    quantize: bool = True,
    data_dir: str | None = None,
    out: Path | None = None,
    onnx: bool = True,
    bf16: bool | None = None,
) -> dict[str, Any]:
    """Measure naive vs fast (and int8) scoring; returns the result and writes it as JSON to `out`.

    `bf16`: None = the bf16 variants where the CPU has bf16 units; True = always (emulated elsewhere); False = never.
    """
    import torch
    from transformers import pipeline

    from seawall.data import load
    from seawall.detect.base import load_detector

    detector = load_detector(model_dir)
    if detector.backend != "encoder":
        raise SeawallError(
            f"bench measures the encoder backend; {model_dir} is a {detector.backend!r} detector"
        )
    load_before = load_average()
    busy = warn_if_busy(load_before, "detector bench")
    setup_torch(detector.num_threads or 2)
    records = load("securebreak", data_dir=data_dir).records
    rng = np.random.default_rng(0)
    picked = [records[i] for i in rng.choice(len(records), size=min(n, len(records)), replace=False)]
    pairs = [(r.prompt, r.response) for r in picked]
    lengths = [len(detector.encode([p]).ids[0]) for p in pairs]
    default_path = detector.scoring_path()
    detector.set_params(quantize=False, runtime="torch", precision="float32")
    with quiet_transformers():
        naive_pipe = pipeline(
            "text-classification", model=detector.model_, tokenizer=detector.tokenizer_, device=-1, top_k=None
        )

    def naive(chunk: list[tuple[str, str]], batch_size: int) -> list[float]:
        inputs = [{"text": p, "text_pair": r} for p, r in chunk]
        outputs = naive_pipe(
            inputs,
            batch_size=batch_size,
            padding="max_length",
            truncation=True,
            max_length=detector.max_length,
        )
        return [next(o["score"] for o in out if o["label"] in ("unsafe", "LABEL_1")) for out in outputs]

    result: dict[str, Any] = {
        "model": model_dir,
        "detector_id": detector.detector_id,
        "n": len(pairs),
        "threshold": detector.threshold_,
        "max_length": detector.max_length,
        "token_lengths": {
            "mean": float(np.mean(lengths)),
            "p50": float(np.percentile(lengths, 50)),
            "p95": float(np.percentile(lengths, 95)),
            "max": int(max(lengths)),
        },
        "torch_threads": torch.get_num_threads(),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "cpu_model": cpu_model(),
            "matrix_isa": sorted(MATRIX_ISA & cpu_flags()),
            "bf16_supported": bf16_supported(),
        },
        "detector_scoring_path": default_path,  # what this detector's own settings run here
        "load_avg_before": load_before,
        "busy_at_start": busy,
        "reference": REFERENCE,
        "runs": [],
    }
    reference = detector.raw_score(pairs)  # warm-up and the fp32 reference
    naive(pairs[:4], 4)
    ref_decisions = _decide(detector, reference)
    with_bf16 = bf16_supported() if bf16 is None else bf16
    extra = {
        name: _variant_scorer(detector, name, pairs[:2]) for name in _variant_names(quantize, onnx, with_bf16)
    }
    for batch_size in BATCH_SIZES:
        chunks = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]
        variants: dict[str, Any] = {
            "naive-pipeline": lambda c, b=batch_size: naive(c, b),
            REFERENCE: lambda c: detector.raw_score(c).tolist(),
            **extra,
        }
        # Interleaved: every chunk is scored by every variant in turn, so load from other processes on a shared
        # machine hits all variants alike instead of whichever happened to run during a busy minute.
        scores: dict[str, list[float]] = {name: [] for name in variants}
        latencies: dict[str, list[float]] = {name: [] for name in variants}
        for chunk in chunks:
            for name, fn in variants.items():
                start = time.perf_counter()
                scores[name].extend(fn(chunk))
                latencies[name].append(time.perf_counter() - start)
        for name in variants:
            values = np.asarray(scores[name], dtype=np.float64)
            decisions = _decide(detector, values)
            result["runs"].append(
                {
                    "variant": name,
                    "batch_size": batch_size,
                    **_stats(latencies[name], len(pairs)),
                    "agreement_vs_fp32": float((decisions == ref_decisions).mean()),
                    "decisions_differing": int((decisions != ref_decisions).sum()),
                    "max_abs_prob_diff_vs_fp32": float(np.abs(values - reference).max()),
                }
            )
    for run in result["runs"]:
        same_batch = {r["variant"]: r for r in result["runs"] if r["batch_size"] == run["batch_size"]}
        run["speedup_vs_naive"] = run["responses_per_s"] / same_batch["naive-pipeline"]["responses_per_s"]
        run["speedup_vs_fp32"] = run["responses_per_s"] / same_batch[REFERENCE]["responses_per_s"]
    result["load_avg_after"] = load_average()
    if out is not None:
        atomic_write_json(out, result)
    return result


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or platform.processor() where there is none."""
    if CPUINFO.is_file():
        for line in CPUINFO.read_text(errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _variant_names(quantize: bool, onnx: bool, bf16: bool) -> list[str]:
    names = ["fast-bf16", "fast-bf16-autocast"] if bf16 else []
    names += ["fast-int8"] if quantize else []
    if onnx:
        names += ["onnx"] + (["onnx-int8"] if quantize else [])
    return names


def _variant_scorer(detector: Any, name: str, warm_up: list[tuple[str, str]]) -> Callable[[Any], list[float]]:
    """A scoring function for one bench variant (a copy of the detector sharing its fp32 weights), warmed up."""
    settings = {
        "fast-bf16": ("torch", False, "bfloat16"),
        "fast-bf16-autocast": ("torch", False, "float32"),
        "fast-int8": ("torch", True, "float32"),
        "onnx": ("onnx", False, "float32"),
        "onnx-int8": ("onnx", True, "float32"),
    }
    runtime, int8, precision = settings[name]
    variant = copy.copy(detector)
    variant.set_params(runtime=runtime, quantize=int8, precision=precision)
    if name == "fast-bf16" and not bf16_supported():
        # `precision="bfloat16"` falls back to fp32 here; a bf16 copy scored as is measures torch's emulation.
        import torch

        variant.set_params(precision="float32")
        variant.model_ = copy.deepcopy(detector.model_).to(torch.bfloat16).eval()
    mode = "bfloat16" if name == "fast-bf16-autocast" else "float32"

    def score(chunk: Any) -> list[float]:
        with autocast(mode):
            return variant.raw_score(chunk).tolist()

    with quiet_transformers() if runtime == "onnx" else contextlib.nullcontext():
        score(warm_up)  # build the bf16 / int8 copy or the ONNX session outside the timing
    return score


def _decide(detector: Any, raw: np.ndarray) -> np.ndarray:
    from seawall.detect.calibration import apply_calibrator

    return apply_calibrator(detector.calibrator_, raw) >= detector.threshold_


def print_bench(result: dict[str, Any]) -> None:
    """Print the bench table (p95 latencies are in the JSON), with the load averages before and after."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # A light box, short headers and no wrapping: the variant names stay whole in an 80-column terminal.
    table = Table(title="detector bench", box=box.SIMPLE_HEAD, padding=(0, 1, 0, 0), pad_edge=False)
    table.add_column("variant", no_wrap=True)
    for header in ("batch", "resp/s", "p50 ms", "×naive", "×fp32", "agree", "max |Δp|"):
        table.add_column(header, no_wrap=True, justify="right")
    for r in result["runs"]:
        table.add_row(
            r["variant"],
            str(r["batch_size"]),
            f"{r['responses_per_s']:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['speedup_vs_naive']:.2f}",
            f"{r['speedup_vs_fp32']:.2f}",
            f"{r['agreement_vs_fp32']:.2%}",
            f"{r['max_abs_prob_diff_vs_fp32']:.1e}",
        )
    console = Console()
    console.print(table)
    console.print(
        f"load average (1, 5, 15 min) before {result['load_avg_before']}, after {result['load_avg_after']}; "
        f"this detector scores with {result['detector_scoring_path']} here"
    )
    if result["busy_at_start"]:
        console.print(
            f"[bold red]the machine was busy at the start (1-min load > {BUSY_LOAD}): timings are upper bounds"
        )
