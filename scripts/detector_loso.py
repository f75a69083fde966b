"""Leave-one-source-out: one detector per held-out source of a config's mix, scored on every source's test rows.

    python scripts/detector_loso.py --config configs/detector-encoder-v2.yaml --out runs/loso/encoder-v2
    python scripts/detector_loso.py --render runs/loso/encoder-v2     # the Markdown tables, from the JSON
    python scripts/detector_loso.py --page docs/results/detector-loso.md docs/results/detector/loso-*   # the page

For each source (`seawall.detect.data.SOURCES` that the mix holds; `--sources` picks some) it trains the config's
backend on the mix without that source (`leave_one_source_out`: its rows and any row sharing one of its prompts
left out of train and dev), calibrates on the remaining dev, and scores the test rows of every source; `none` is
the whole mix, the in-distribution reference. Each run writes OUT/<source>.json atomically, so an interrupted run
resumes where it stopped (finished sources are skipped; a JSON written for another config is an error). Encoder
checkpoints go to the config's checkpoint_dir + `-loso-<source>`, so a run cut mid-training resumes too.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

FULL_MIX = "none"


def config_fingerprint(config: Any) -> str:
    """sha256 of the config (its validated fields), so that results of another config are never mixed in."""
    return hashlib.sha256(json.dumps(config.model_dump(), sort_keys=True).encode()).hexdigest()[:16]


def run_loso(
    config_path: str | Path,
    out: str | Path,
    sources: list[str] | None = None,
    data_dir: str | None = None,
    log: Any = print,
    save_models: bool = False,
) -> dict[str, dict[str, Any]]:
    """Train and score one detector per held-out source (plus `none`); returns every source's result. With
    `save_models`, each detector is also saved to OUT/models/<source> (to inspect what it learnt)."""
    from seawall.detect.base import make_detector
    from seawall.detect.data import assemble_mix, leave_one_source_out, mix_source
    from seawall.detect.pipeline import TrainConfig, evaluate_detector
    from seawall.errors import SeawallError
    from seawall.io import atomic_write_json

    config = TrainConfig.from_yaml(config_path)
    fingerprint = config_fingerprint(config)
    splits, mix_report = assemble_mix(config.data, data_dir)
    present = list(dict.fromkeys(mix_source(r) for r in splits["test"]))
    chosen = sources or [FULL_MIX, *present]
    unknown = [s for s in chosen if s != FULL_MIX and s not in present]
    if unknown:
        raise SeawallError(f"{config_path}: the mix holds no source {unknown}; it holds {', '.join(present)}")
    tests = {s: [r for r in splits["test"] if mix_source(r) == s] for s in present}
    out = Path(out)
    results: dict[str, dict[str, Any]] = {}
    for source in chosen:
        path = out / f"{source}.json"
        if path.is_file():
            done = json.loads(path.read_text(encoding="utf-8"))
            if done.get("config_fingerprint") != fingerprint:
                raise SeawallError(
                    f"{path} was written for another config ({done.get('config_name')}, "
                    f"{done.get('config_fingerprint')}); use another --out or delete it"
                )
            log(f"{source}: done already ({path})")
            results[source] = done
            continue
        if source == FULL_MIX:
            train, dev, overlap = splits["train"], splits["dev"], {"train": 0, "dev": 0}
        else:
            holdout = leave_one_source_out(splits, source)
            train, dev, overlap = holdout.train, holdout.dev, holdout.dropped_for_prompt_overlap
        params = per_source_checkpoints(config.params, source)
        log(f"{source}: training {config.backend} on {len(train)} rows, calibrating on {len(dev)}")
        detector = make_detector(config.backend, **params)
        start = time.perf_counter()
        detector.fit(train, dev=dev)
        seconds = time.perf_counter() - start
        scores = {}
        for name, records in tests.items():
            report = evaluate_detector(detector, records, f"{name}:test", None, config.n_boot)
            scores[name] = {k: report[k] for k in ("n", "n_unsafe", "metrics", "ci95")}
            if "members" in report:  # a composite detector: each member alone on the same rows
                scores[name]["members"] = {
                    member: {k: entry[k] for k in ("backend", "metrics")}
                    for member, entry in report["members"].items()
                }
        result = {
            "config_name": config.name,
            "config_fingerprint": fingerprint,
            "backend": config.backend,
            "held_out": source,
            "n_train": len(train),
            "n_dev": len(dev),
            "train_sources": sorted({mix_source(r) for r in train}),
            "dropped_for_prompt_overlap": overlap,
            "mix": mix_report.as_dict(),
            "train_seconds": round(seconds, 1),
            "threshold": detector.threshold_,
            "eval": scores,
        }
        if save_models:
            detector.save(out / "models" / source)
        atomic_write_json(path, result)
        results[source] = result
        log(f"{source}: {seconds:.0f} s, wrote {path}")
    return results


def per_source_checkpoints(params: Any, source: str) -> Any:
    """`params` with every `checkpoint_dir` (its own, and its members' in a composite's nested configs) suffixed
    `-loso-<source>`, so a run per held-out source never resumes another source's checkpoint."""
    if isinstance(params, dict):
        out = {k: per_source_checkpoints(v, source) for k, v in params.items()}
        if out.get("checkpoint_dir"):
            out["checkpoint_dir"] = f"{out['checkpoint_dir']}-loso-{source}"
        return out
    if isinstance(params, list):
        return [per_source_checkpoints(v, source) for v in params]
    return params


def _cell(entry: dict[str, Any] | None, rows: dict[str, Any] | None = None) -> tuple[str, float]:
    """AUROC where the test rows hold both classes, else the share flagged unsafe (one-label sources). `rows` is
    the entry that counts the rows when `entry` has only metrics (a member of a composite)."""
    from seawall.detect.report import loso_has_auroc

    if entry is None:
        return "–", math.nan
    metrics = entry["metrics"]
    if loso_has_auroc(rows or entry):
        return f"{metrics['auroc']:.3f}", metrics["auroc"]
    return f"flag {metrics['flag_rate']:.3f}", metrics["flag_rate"]


def render_loso(results_dir: str | Path) -> str:
    """The Markdown of a LOSO run from its JSON: the matrix (row: held-out source, column: test source; the held-out
    cell in bold) and, per source, held out against in the mix."""
    results_dir = Path(results_dir)
    runs = {p.stem: json.loads(p.read_text(encoding="utf-8")) for p in sorted(results_dir.glob("*.json"))}
    if not runs:
        raise SystemExit(f"{results_dir}: no LOSO results (*.json)")
    columns = list(next(iter(runs.values()))["eval"])
    order = [s for s in [FULL_MIX, *columns] if s in runs]
    first = runs[order[0]]
    lines = [
        f"Leave-one-source-out, `{first['config_name']}` ({first['backend']}, config {first['config_fingerprint']}). "
        "Rows: the source held out of train and dev (`none`: the whole mix); columns: the test rows of each "
        "source; cells: AUROC, or for one-label sources the share flagged unsafe (lower is better where every "
        "row is safe; `attempts` is all unsafe, so there it is the recall and higher is better). The held-out "
        "source's own cell is in bold; change = held out − in the mix.",
        "",
        "| held out | train rows | " + " | ".join(columns) + " |",
        "|---|---:|" + "---:|" * len(columns),
    ]
    for source in order:
        run = runs[source]
        cells = []
        for column in columns:
            text, _ = _cell(run["eval"].get(column))
            cells.append(f"**{text}**" if column == source else text)
        lines.append(f"| {source} | {run['n_train']} | " + " | ".join(cells) + " |")
    if FULL_MIX in runs:
        lines += [
            "",
            "| source | n test | in the mix | held out | change |",
            "|---|---:|---:|---:|---:|",
        ]
        for source in columns:
            if source not in runs:
                continue
            text_in, value_in = _cell(runs[FULL_MIX]["eval"][source])
            text_out, value_out = _cell(runs[source]["eval"][source])
            lines.append(
                f"| {source} | {runs[source]['eval'][source]['n']} | {text_in} | {text_out} | "
                f"{value_out - value_in:+.3f} |"
            )
    lines += _members_table(runs, columns)
    return "\n".join(lines) + "\n"


def _members_table(runs: dict[str, dict[str, Any]], columns: list[str]) -> list[str]:
    """For a composite detector (ensemble, cascade): each held-out source's own cell for every member alone, on
    the same rows, beside the composite's; [] when the runs hold no member results."""
    held = [s for s in columns if s in runs and "members" in runs[s]["eval"][s]]
    if not held:
        return []
    members = runs[held[0]]["eval"][held[0]]["members"]
    names = [f"{name} ({entry['backend']})" for name, entry in members.items()]
    lines = [
        "",
        "Each member alone on the held-out source (trained and calibrated on the same rows as the composite, at its "
        "own threshold), beside the composite:",
        "",
        "| held out | " + " | ".join(names) + f" | {runs[held[0]]['backend']} |",
        "|---|" + "---:|" * (len(names) + 1),
    ]
    means: dict[str, list[float]] = {}
    for source in held:
        entry = runs[source]["eval"][source]
        cells = []
        for key, part in [*entry["members"].items(), ("composite", entry)]:
            text, value = _cell(part, rows=entry)
            cells.append(text)
            if 0 < entry["n_unsafe"] < entry["n"]:
                means.setdefault(key, []).append(value)
        lines.append(f"| {source} | " + " | ".join(cells) + " |")
    if means:
        cells = [f"{sum(v) / len(v):.3f}" for v in means.values()]
        lines.append("| mean AUROC | " + " | ".join(cells) + " |")
    return lines


def render_page(results_dirs: list[str | Path]) -> str:
    """docs/results/detector-loso.md: a title, how to regenerate it, then every run's tables."""
    names = " ".join(str(d) for d in results_dirs)
    sources = ", ".join(
        f"`{path}`" for folder in results_dirs for path in sorted(Path(folder).glob("*.json"))
    )
    parts = [
        "# Leave-one-source-out results",
        "",
        f"Generated by `python scripts/detector_loso.py --page docs/results/detector-loso.md {names}` from the "
        f"committed JSON files {sources} (each folder written by `python scripts/detector_loso.py --config CONFIG "
        "--out FOLDER`). Do not edit by hand. A run that held out only some sources has only their rows.",
        "",
    ]
    for folder in results_dirs:
        files = ", ".join(f"`{path.name}`" for path in sorted(Path(folder).glob("*.json")))
        parts += [
            f"## `{folder}`",
            "",
            f"From the committed JSON in `{folder}/`: {files}.",
            "",
            render_loso(folder),
        ]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", help="A `seawall detect train` YAML config.")
    parser.add_argument("--out", help="Folder for one JSON per held-out source.")
    parser.add_argument(
        "--sources", help="Comma-separated sources to hold out (default: none + every source)."
    )
    parser.add_argument("--data-dir", default=None)
    parser.add_argument(
        "--save-models", action="store_true", help="Also save each detector to OUT/models/<source>."
    )
    parser.add_argument(
        "--render", metavar="DIR", help="Print the Markdown tables of a finished run and exit."
    )
    parser.add_argument(
        "--page",
        nargs="+",
        metavar=("OUT", "DIR"),
        help="Write the results page OUT from the run folders DIR…",
    )
    args = parser.parse_args(argv)
    if args.page:
        from seawall.io import atomic_write_text

        if len(args.page) < 2:
            parser.error("--page needs the page to write and at least one run folder")
        atomic_write_text(args.page[0], render_page(args.page[1:]))
        return
    if args.render:
        sys.stdout.write(render_loso(args.render))
        return
    if not (args.config and args.out):
        parser.error("--config and --out are needed (or --render DIR)")
    from seawall.errors import SeawallError

    sources = args.sources.split(",") if args.sources else None
    try:
        run_loso(args.config, args.out, sources, args.data_dir, save_models=args.save_models)
    except SeawallError as error:
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
