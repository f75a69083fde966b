"""`seawall detect bench`: the encoder's fast path against a naive transformers pipeline, in the same run.

Inputs are `n` SecureBreak (prompt, response) pairs drawn with a fixed seed from all rows, so the length
distribution is the real one (many short and empty responses, some long ones). For batch sizes 1 and 32:
- naive: `transformers.pipeline("text-classification")` with padding="max_length" (every input padded to the
  detector's max_length), truncation on, default thread settings apart from the shared 2-thread cap;
- fast: the detector's own scoring (length-sorted batches, dynamic padding, torch.inference_mode);
- fast-int8: the same with dynamic int8 quantization of the linear layers;
- onnx: the same batches scored by ONNX Runtime (in-memory export, all graph optimizations, same thread count);
- onnx-int8: ONNX Runtime with only the feed-forward MatMuls in int8 (per-channel), attention in fp32.
The fast paths split a batch further where lengths differ by more than 20% (see `length_sorted_batches`): the naive
pipeline gets the same chunks of 1 or 32 rows but pads them to max_length, as a plain pipeline call does.
Latency is per call (one batch); throughput is responses / total seconds. The variants are interleaved chunk by
chunk, so background load affects them alike. Decision agreement is measured against
the fp32 fast path at the detector's stored threshold (the fp32 path is the reference the threshold was set on).
"""

from __future__ import annotations

import copy
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np

from seawall.detect._torch import setup_torch
from seawall.errors import SeawallError
from seawall.io import atomic_write_json

BATCH_SIZES = (1, 32)


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
) -> dict[str, Any]:
    """Measure naive vs fast (and int8) scoring; returns the result and writes it as JSON to `out`."""
    import torch
    from transformers import pipeline

    from seawall.data import load
    from seawall.detect.base import load_detector

    detector = load_detector(model_dir)
    if detector.backend != "encoder":
        raise SeawallError(
            f"bench measures the encoder backend; {model_dir} is a {detector.backend!r} detector"
        )
    setup_torch(detector.num_threads or 2)
    records = load("securebreak", data_dir=data_dir).records
    rng = np.random.default_rng(0)
    picked = [records[i] for i in rng.choice(len(records), size=min(n, len(records)), replace=False)]
    pairs = [(r.prompt, r.response) for r in picked]
    lengths = [len(detector.encode([p]).ids[0]) for p in pairs]
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
        "machine": {"cpu_count": __import__("os").cpu_count(), "platform": platform.platform()},
        "runs": [],
    }
    detector.set_params(quantize=False)
    reference = detector.raw_score(pairs)  # warm-up and the fp32 reference
    naive(pairs[:4], 4)
    ref_decisions = _decide(detector, reference)
    fast = lambda c: detector.raw_score(c).tolist()  # noqa: E731
    extra: dict[str, Any] = {}
    settings = [("fast-int8", "torch", True)] if quantize else []
    if onnx:
        settings += [("onnx", "onnx", False)] + ([("onnx-int8", "onnx", True)] if quantize else [])
    for name, runtime, int8 in settings:
        variant = copy.copy(detector)
        variant.set_params(runtime=runtime, quantize=int8)
        variant.raw_score(pairs[:2])  # build the quantized copy / ONNX session outside the timing
        extra[name] = lambda c, v=variant: v.raw_score(c).tolist()
    for batch_size in BATCH_SIZES:
        chunks = [pairs[i : i + batch_size] for i in range(0, len(pairs), batch_size)]
        variants: dict[str, Any] = {
            "naive-pipeline": lambda c, b=batch_size: naive(c, b),
            "fast": fast,
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
                    "max_abs_prob_diff_vs_fp32": float(np.abs(values - reference).max()),
                }
            )
    for run in result["runs"]:
        naive_run = next(
            r
            for r in result["runs"]
            if r["variant"] == "naive-pipeline" and r["batch_size"] == run["batch_size"]
        )
        run["speedup_vs_naive"] = run["responses_per_s"] / naive_run["responses_per_s"]
    if out is not None:
        atomic_write_json(out, result)
    return result


def _decide(detector: Any, raw: np.ndarray) -> np.ndarray:
    from seawall.detect.calibration import apply_calibrator

    return apply_calibrator(detector.calibrator_, raw) >= detector.threshold_


def print_bench(result: dict[str, Any]) -> None:
    """Print the bench table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(
        "variant", "batch", "responses/s", "p50 ms", "p95 ms", "speed-up", "agreement", title="detector bench"
    )
    for r in result["runs"]:
        table.add_row(
            r["variant"],
            str(r["batch_size"]),
            f"{r['responses_per_s']:.1f}",
            f"{r['p50_ms']:.1f}",
            f"{r['p95_ms']:.1f}",
            f"{r['speedup_vs_naive']:.2f}×",
            f"{r['agreement_vs_fp32']:.2%}",
        )
    Console().print(table)
