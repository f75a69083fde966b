"""Generate docs/results/gene.md from the gene benchmarks' JSON (never edit the numbers by hand).

python scripts/gene_results.py
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def _load(name: str) -> dict | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def memory_section(r: dict) -> list[str]:
    """Markdown for bench/gene_extract_memory.py."""
    c = r["checkpoint"]
    gib = c["bytes_per_model"] / 1024**3
    s, m = r["streaming"], r["in_memory"]
    return [
        "## Streaming extraction memory (`bench/gene_extract_memory.py`)",
        "",
        f"Synthetic Llama-shaped checkpoints A and D: {c['layers']} layers, hidden {c['hidden']}, intermediate "
        f"{c['intermediate']}, {gib:.2f} GiB each in {c['shards_per_model']} shards. Largest block linear: "
        f"{c['largest_block_linear_bytes'] / 1024**2:.0f} MiB (a pair: {r['largest_pair_mib']:.0f} MiB). Each job runs "
        "in a fresh process; its peak (VmHWM) is reset after the imports, so the last columns are the job's own "
        "working set.",
        "",
        "| extraction | RSS after imports (MiB) | peak RSS (MiB) | peak above imports (MiB) | seconds |",
        "|---|---|---|---|---|",
        f"| streaming (`seawall.gene.extract`, dense τ, sharded output) | {s['rss_after_imports_mib']:.0f} | "
        f"{s['peak_rss_mib']:.0f} | {s['peak_above_imports_mib']:.0f} | {s['seconds']:.1f} |",
        f"| in memory (load both models, subtract, save) | {m['rss_after_imports_mib']:.0f} | "
        f"{m['peak_rss_mib']:.0f} | {m['peak_above_imports_mib']:.0f} | {m['seconds']:.1f} |",
        "",
        f"Streaming working set: {s['peak_above_imports_mib'] / r['largest_pair_mib']:.1f}× the largest tensor pair, "
        f"{s['peak_above_imports_mib'] / (c['bytes_per_model'] / 1024**2):.3f}× one model; loading both models needs "
        f"{m['peak_above_imports_mib'] / max(s['peak_above_imports_mib'], 1):.0f}× more.",
        "",
    ]


def cost_section(r: dict) -> list[str]:
    """Markdown for bench/gene_calibrate_cost.py."""
    cal, sft = r["calibration"], r["sft_epoch"]
    cfg = cal["config"]
    optimizer = cfg.get("optimizer", "adam")
    forward = (
        f"cached prefix from layer {cal['first_layer']}"
        if cal.get("cached_prefix")
        else "full forward every pass"
    )
    layers = cal.get("selected_layers")
    selected = "all layers selected" if layers is None else f"layers {layers[0]}–{layers[-1]} selected"
    lines = [
        f"## Calibration cost vs one epoch of safety fine-tuning: {r['model']}, {selected} (`bench/gene_calibrate_cost.py`)",
        "",
        f"Target: {r['model']} ({r['parameters'] / 1e6:.2f}M parameters), torch threads: {r['threads']}; each job in a "
        "fresh process on the same machine (peak = VmHWM above the RSS at the job's start). Model loading is "
        "excluded from both timings.",
        "",
    ]
    if "prepare_seconds" not in cal:
        lines += [
            "| job | trainable parameters | data | seconds | peak memory above start (MiB) |",
            "|---|---|---|---|---|",
            f"| SafeGene calibration ({cal['epochs']} epochs, incl. generating T's retain answers) | {cal['groups']} | "
            f"{cal['shots']['harmful']} harmful + {cal['shots']['benign']} benign prompts | {cal['seconds']:.1f} | "
            f"{cal['peak_above_start_mib']:.0f} |",
        ]
    else:
        lines += [
            "| job | trainable parameters | data | preparation (s) | fitting (s) | total (s) | peak memory above "
            "start (MiB) |",
            "|---|---|---|---|---|---|---|",
            f"| SafeGene calibration ({optimizer}, {cal['epochs']} passes, {forward}, {selected}) | "
            f"{cal['groups']} | {cal['shots']['harmful']} harmful + {cal['shots']['benign']} benign prompts | "
            f"{cal['prepare_seconds']:.1f} | {cal['fit_seconds']:.1f} | {cal['seconds']:.1f} | "
            f"{cal['peak_above_start_mib']:.0f} |",
        ]
    reused = (
        " (SFT measured in an earlier run of the same bench)" if sft.get("reused_from_earlier_run") else ""
    )
    middle = "– | – | " if "prepare_seconds" in cal else ""
    lines += [
        f"| full safety fine-tuning, one epoch (AdamW lr {sft['lr']}, batch {sft['batch_size']}){reused} | "
        f"{r['trainable_parameters']['sft']} | {sft['examples']} examples ({sft['steps']} steps) | {middle}"
        f"{sft['seconds']:.1f} | {sft['peak_above_start_mib']:.0f} |",
        "",
        f"**Ratio calibration (preparation + fitting) / SFT epoch: {r['ratio_calibration_over_sft_epoch']:.3f}**"
        + (
            f" (fitting alone: {r['ratio_fit_only_over_sft_epoch']:.3f}); "
            if "ratio_fit_only_over_sft_epoch" in r
            else "; "
        )
        + f"memory ratio {r['ratio_memory_calibration_over_sft']:.2f}. Calibration loss {cal['initial_loss']:.3f} → "
        f"{cal['final_loss']:.3f}.",
        "",
    ]
    if "fit_seconds" in cal:
        per_pass = cal["fit_seconds"] / max(cal["epochs"], 1)
        n_shots = cal["shots"]["harmful"] + cal["shots"]["benign"]
        lines += [
            f"Reading: one pass over the {n_shots} shots (forward through the selected layers, logits at loss positions "
            f"only, backward to α) takes {per_pass:.2f} s = {per_pass / sft['seconds']:.3f} of the SFT epoch, and "
            f"L-BFGS needed {cal['epochs']} passes; preparation (T's greedy answers, prefix states, T's "
            f"log-probs) is {cal['prepare_seconds'] / max(cal['seconds'], 1e-9):.0%} of the calibration time. "
            "Each pass still back-propagates through every selected layer (all layers is the worst case), so the "
            "cost scales with the number of shot tokens × selected layers; fine-tuning scales with the safety data "
            "× all layers, plus gradients and AdamW state for every weight.",
            "",
        ]
    return lines


def main() -> None:
    """Write docs/results/gene.md from whatever benchmark JSON exists."""
    lines = [
        "# SafeGene benchmarks",
        "",
        "Generated by `scripts/gene_results.py` from `docs/results/gene_*.json`.",
        "",
    ]
    memory = _load("gene_extract_memory")
    costs = [json.loads(f.read_text()) for f in sorted(RESULTS.glob("gene_calibrate_cost*.json"))]
    if memory:
        lines += memory_section(memory)
    for cost in costs:
        lines += cost_section(cost)
    if not (memory or costs):
        lines.append("No results yet: run `bench/gene_extract_memory.py` and `bench/gene_calibrate_cost.py`.")
    (RESULTS / "gene.md").write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {RESULTS / 'gene.md'}")


if __name__ == "__main__":
    main()
