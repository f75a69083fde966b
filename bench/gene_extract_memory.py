"""Peak memory of streaming safety-vector extraction vs loading both models, on a synthetic sharded checkpoint.

Builds two Llama-shaped checkpoints (A and D = A + noise on the block linears) of `--size-gb` each, sharded, then
measures, each in a fresh subprocess, the peak resident memory (VmHWM, reset after imports) of
  1. streaming: `seawall.gene.extraction(A, D, out, form=delta)` (tensor by tensor, sharded output);
  2. in-memory: load every shard of A and D with safetensors.torch.load_file, subtract, save (the naive way);
`--rounds N` measures both N times, alternating which goes first, and keeps each one's median-peak round. The 1-, 5-
and 15-minute load averages before and after are recorded and printed (a loud warning when the machine was busy at
the start: the seconds are then upper bounds; the peaks do not depend on load). The ratios are within this run.
Prints a table and writes JSON (default docs/results/gene_extract_memory.json).

    python bench/gene_extract_memory.py --size-gb 1.0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULES = {
    "self_attn.q_proj": ("h", "h"),
    "self_attn.k_proj": ("h", "h"),
    "self_attn.v_proj": ("h", "h"),
    "self_attn.o_proj": ("h", "h"),
    "mlp.gate_proj": ("i", "h"),
    "mlp.up_proj": ("i", "h"),
    "mlp.down_proj": ("h", "i"),
}


def build(
    folder: Path, layers: int, hidden: int, inter: int, vocab: int, seed: int, base: Path | None
) -> None:
    """Write a synthetic Llama-shaped sharded checkpoint (D = A + 1e-3 noise when `base` is given)."""
    import torch

    from seawall.models.checkpoint import ShardedWriter, open_checkpoint

    gen = torch.Generator().manual_seed(seed)
    dims = {"h": hidden, "i": inter}
    writer = ShardedWriter(folder, max_shard_bytes=256 * 1024**2)
    src = open_checkpoint(base) if base else None

    def tensor(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if src is not None:
            t = src.get(name)
            return t + 1e-3 * torch.randn(t.shape, generator=gen) if name.endswith("proj.weight") else t
        return 0.02 * torch.randn(shape, generator=gen)

    writer.add("model.embed_tokens.weight", tensor("model.embed_tokens.weight", (vocab, hidden)))
    for layer in range(layers):
        for module, (out_d, in_d) in MODULES.items():
            name = f"model.layers.{layer}.{module}.weight"
            writer.add(name, tensor(name, (dims[out_d], dims[in_d])))
        for norm in ("input_layernorm", "post_attention_layernorm"):
            name = f"model.layers.{layer}.{norm}.weight"
            writer.add(name, tensor(name, (hidden,)) if src else torch.ones(hidden))
    writer.add("model.norm.weight", torch.ones(hidden))
    writer.add("lm_head.weight", tensor("lm_head.weight", (vocab, hidden)))
    writer.close()
    config = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 64,
        "num_key_value_heads": hidden // 64,
        "vocab_size": vocab,
    }
    (folder / "config.json").write_text(json.dumps(config))


# Each job resets the kernel's high-water mark (VmHWM) after its imports, so the peak it reports is the job's own
# working set on top of what the process already held (imports), not the import transient.
PRELUDE = """
import json, sys, time
from pathlib import Path
import torch
torch.set_num_threads(2)


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])


def reset_peak():
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
"""

STREAM = (
    PRELUDE
    + """
from seawall.gene import ExtractConfig, extract
import seawall.gene.extraction
reset_peak()
base = status("VmRSS")
t = time.perf_counter()
extract(sys.argv[1], sys.argv[2], sys.argv[3], ExtractConfig(form="delta", checksums=False), progress=False)
print(json.dumps({"seconds": time.perf_counter() - t, "base_kb": base, "peak_kb": status("VmHWM")}))
"""
)

IN_MEMORY = (
    PRELUDE
    + """
from safetensors.torch import load_file, save_file
reset_peak()
base = status("VmRSS")
t = time.perf_counter()
a, d = {}, {}
for f in sorted(Path(sys.argv[1]).glob("*.safetensors")):
    a.update(load_file(str(f)))
for f in sorted(Path(sys.argv[2]).glob("*.safetensors")):
    d.update(load_file(str(f)))
delta = {k: a[k] - d[k] for k in a if ".layers." in k and k.endswith("proj.weight")}
Path(sys.argv[3]).mkdir(parents=True, exist_ok=True)
save_file(delta, str(Path(sys.argv[3]) / "delta.safetensors"))
print(json.dumps({"seconds": time.perf_counter() - t, "base_kb": base, "peak_kb": status("VmHWM")}))
"""
)


def measure(code: str, *args: str) -> dict:
    """Run `code` in a fresh interpreter and return its JSON line (peak RSS of that process only)."""
    env_path = str(ROOT / "src")
    proc = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"},
        check=True,
    )
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    """Build the synthetic checkpoints, measure, print a table, write JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-gb", type=float, default=1.0, help="approximate size of each checkpoint")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/seawall-bench-extract"))
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "gene_extract_memory.json")
    parser.add_argument("--keep", action="store_true", help="keep the synthetic checkpoints")
    parser.add_argument(
        "--rounds", type=int, default=1, help="measurements of each method, alternating order"
    )
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT / "src"))
    from seawall.detect.bench import load_average, warn_if_busy

    load_before = load_average()
    busy = warn_if_busy(load_before, "extraction memory bench")

    hidden, inter, vocab = args.hidden, 4 * args.hidden, 32000
    per_layer = 4 * 4 * hidden * hidden + 3 * 4 * hidden * inter
    fixed = 2 * 4 * vocab * hidden
    layers = max(1, round((args.size_gb * 1024**3 - fixed) / per_layer))
    work = args.workdir
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    build(work / "A", layers, hidden, inter, vocab, 0, None)
    build(work / "D", layers, hidden, inter, vocab, 1, work / "A")
    build_seconds = time.perf_counter() - t
    size = sum(f.stat().st_size for f in (work / "A").glob("*.safetensors"))
    largest = max(4 * hidden * inter, 4 * vocab * hidden)
    largest_linear = 4 * hidden * inter

    methods = {"streaming": (STREAM, "out-stream"), "in_memory": (IN_MEMORY, "out-naive")}
    runs: dict[str, list[dict]] = {name: [] for name in methods}
    names = list(methods)
    for round_ in range(args.rounds):
        for name in names[round_ % 2 :] + names[: round_ % 2]:
            code, out = methods[name]
            runs[name].append(measure(code, str(work / "A"), str(work / "D"), str(work / out)))
            shutil.rmtree(work / out, ignore_errors=True)
    stream, naive = (sorted(runs[n], key=lambda m: m["peak_kb"])[len(runs[n]) // 2] for n in names)
    load_after = load_average()
    mib = 1024**2

    def row(m: dict) -> dict:
        return {
            "seconds": m["seconds"],
            "rss_after_imports_mib": m["base_kb"] / 1024,
            "peak_rss_mib": m["peak_kb"] / 1024,
            "peak_above_imports_mib": (m["peak_kb"] - m["base_kb"]) / 1024,
        }

    result = {
        "benchmark": "gene_extract_memory",
        "checkpoint": {
            "layers": layers,
            "hidden": hidden,
            "intermediate": inter,
            "bytes_per_model": size,
            "shards_per_model": len(list((work / "A").glob("*.safetensors"))),
            "largest_tensor_bytes": largest,
            "largest_block_linear_bytes": largest_linear,
            "build_seconds": build_seconds,
        },
        "streaming": row(stream),
        "in_memory": row(naive),
        "largest_pair_mib": 2 * largest_linear / mib,
        "ratio_peak_above_imports_streaming_over_in_memory": (stream["peak_kb"] - stream["base_kb"])
        / max(naive["peak_kb"] - naive["base_kb"], 1),
        "ratio_seconds_streaming_over_in_memory": stream["seconds"] / naive["seconds"],
        "rounds": args.rounds,
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_before": load_before,
            "load_avg_after": load_after,
            "busy_at_start": busy,
        },
    }
    print(
        f"checkpoint: {layers} layers, hidden {hidden}, {size / 1024**3:.2f} GiB per model, "
        f"{result['checkpoint']['shards_per_model']} shards; largest block linear {largest_linear / mib:.0f} MiB"
    )
    print(
        f"{'method':<12}{'RSS after imports':>19}{'peak RSS':>10}{'peak - imports':>16}{'seconds':>9}  (MiB)"
    )
    for key in ("streaming", "in_memory"):
        r = result[key]
        print(
            f"{key:<12}{r['rss_after_imports_mib']:>19.0f}{r['peak_rss_mib']:>10.0f}"
            f"{r['peak_above_imports_mib']:>16.0f}{r['seconds']:>9.1f}"
        )
    print(
        f"streaming / in-memory: peak above imports {result['ratio_peak_above_imports_streaming_over_in_memory']:.3f}, "
        f"seconds {result['ratio_seconds_streaming_over_in_memory']:.2f}"
    )
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}")
    if busy:
        print("!! the machine was busy at the start: seconds are upper bounds (peaks do not depend on load)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
