"""SafeGene ablation on one target of an experiment run: layer choice, τ's rank, refusal targets, shots, λ, α's start and bound.

    python scripts/safegene_ablation.py run RUN_DIR --target sst2-h0 --name sens-c90-l1 \
        --score sensitivity --cumulative 0.9 --lambda 1.0 [--refusals aligned] [--alpha-init 1] \
        [--alpha-max 4] [--min-rel-delta 0] [--layers-from OTHER_NAME|experiment] [--n-harmful 64] [--rank 16]
    python scripts/safegene_ablation.py render RUN_DIR/ablation/summary.json docs/results/safegene-ablation.md

`run` reuses the run's extracted adapter (RUN_DIR/safety-adapter/delta; with --rank, a truncated-SVD adapter of the
same A and D), selects layers (or takes them from an
earlier variant), calibrates on the target, applies, measures the result like the experiment does, and adds a row to
RUN_DIR/ablation/summary.json. `render` writes the Markdown table from that JSON (never typed by hand).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path


def run(args: argparse.Namespace) -> None:
    from seawall.evaluate.experiment import Experiment, ExperimentConfig
    from seawall.evaluate.methods import experiment_shots
    from seawall.gene import SafetyAdapter, select_layers
    from seawall.gene.adapter import MANIFEST_NAME, module_coefficients
    from seawall.gene.calibration import calibrate
    from seawall.gene.config import CalibrateConfig, ExtractConfig, SelectConfig
    from seawall.gene.export import apply
    from seawall.gene.extraction import extract
    from seawall.io import atomic_write_json

    run_dir = Path(args.run_dir)
    out = run_dir / "ablation"
    config = ExperimentConfig.model_validate(
        {**json.loads((run_dir / "config.json").read_text()), "output": str(out)}
    )
    experiment = Experiment(config)
    shots = experiment_shots(experiment, n_harmful=args.n_harmful)
    folder = out / args.name / "adapter"
    shutil.rmtree(folder, ignore_errors=True)
    if args.layers_from in (None, "experiment"):
        source = run_dir / "safety-adapter"
    else:
        source = out / args.layers_from / "adapter"
    if args.rank is None:
        folder.mkdir(parents=True)
        (folder / "delta").symlink_to((run_dir / "safety-adapter" / "delta").resolve())
        shutil.copy(source / MANIFEST_NAME, folder / MANIFEST_NAME)
        adapter = SafetyAdapter.load(folder)
    else:
        # Same A and D, τ truncated to rank r by SVD; the layer choice is carried over so only the rank varies.
        adapter = extract(
            run_dir / "aligned/model",
            run_dir / "degraded/model",
            folder,
            ExtractConfig(form="lora", rank=args.rank, checksums=False),
        )
        chosen = SafetyAdapter.load(source).manifest
        for field in ("layer_scores", "selection", "selected_layers"):
            setattr(adapter.manifest, field, getattr(chosen, field))
        adapter.save_manifest()
    if not args.layers_from:
        select = SelectConfig(score=args.score, cumulative=args.cumulative, top_k=args.top_k)
        select_layers(
            adapter,
            shots,
            aligned=run_dir / "aligned/model",
            degraded=run_dir / "degraded/model",
            model=run_dir / "degraded/model",
            config=select,
            plot=out / args.name / "layers.png",
        )
    target = run_dir / "targets" / args.target / "model"
    calibration = CalibrateConfig(
        max_epochs=args.epochs,
        lambda_retain=args.lam,
        refusals=args.refusals,
        alpha_init=args.alpha_init,
        alpha_max=args.alpha_max,
        min_rel_delta=args.min_rel_delta,
    )
    result = calibrate(adapter, target, shots, calibration, aligned=run_dir / "aligned/model")
    model_dir = out / args.name / args.target / "model"
    coefficients = module_coefficients(
        adapter.modules, adapter.manifest.selected_layers, result.coefficients, result.per_module_type
    )
    apply(adapter, target, model_dir, coefficients=coefficients, overwrite=True)
    task = args.target.split("-h")[0]
    # The variant's settings and the rewritten model's fingerprint key the measurement: rerunning a variant name
    # with other settings measures the new model instead of returning the old one's numbers.
    variant = {k: v for k, v in vars(args).items() if k != "func"}
    measured = experiment.measure_model(f"{args.target}__{args.name}", model_dir, (task,), variant)
    summary_path = out / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    summary[f"{args.target}/{args.name}"] = {
        "target": args.target,
        "score": None if args.layers_from else args.score,
        "layers_from": args.layers_from,
        "lambda": args.lam,
        "refusals": args.refusals,
        "refusal_targets": adapter.manifest.calibration.get("refusal_targets"),
        "alpha_init": args.alpha_init,
        "alpha_max": args.alpha_max,
        "n_harmful_shots": args.n_harmful,
        "rank": args.rank,
        "min_rel_delta": args.min_rel_delta,
        "layers": adapter.manifest.selected_layers,
        "coefficients": result.coefficients,
        "loss": [result.initial_loss, result.final_loss],
        "hrr": {j: v["hrr"]["rate"] for j, v in measured["safety"]["judges"].items()},
        "overrefusal": measured["overrefusal"]["rate"]["rate"],
        "utility": {t: v["accuracy"]["rate"] for t, v in measured["utility"].items()},
        "seconds": round(result.seconds, 1),
    }
    atomic_write_json(summary_path, summary)


def experiment_row(run_dir: Path, target: str) -> dict | None:
    """The run's own SafeGene result on `target`, in the shape of an ablation row (the reference variant)."""
    record_path = run_dir / "restored" / target / "safegene" / "record.json"
    if not record_path.exists():
        return None
    record = json.loads(record_path.read_text())
    task, share = target.split("-h")
    measured = next(
        r
        for r in json.loads((run_dir / "results.json").read_text())["rows"]
        if r.get("method") == "safegene"
        and r["task"] == task
        and round(100 * r["harmful_share"]) == int(share)
    )
    calibrate = record["params"].get("calibrate", {})
    report = record["report"]
    return {
        "target": target,
        "lambda": calibrate.get("lambda_retain", 1.0),
        "refusals": calibrate.get("refusals", "templates"),
        "refusal_targets": report.get("refusal_targets"),
        "alpha_init": calibrate.get("alpha_init", 0.5),
        "alpha_max": calibrate.get("alpha_max", 2.0),
        "layers": report["selected_layers"],
        "coefficients": report["coefficients"],
        "loss": [report["loss"]["initial"], report["loss"]["final"]],
        "hrr": {j: measured[f"hrr_{j}"] for j in ("refusal", "detector") if f"hrr_{j}" in measured},
        "overrefusal": measured["overrefusal"],
        "utility": {task: measured[f"utility_{task}"]},
    }


def render(args: argparse.Namespace) -> None:
    ablations = json.loads(Path(args.summary).read_text())
    run_dir = Path(args.summary).resolve().parent.parent
    summary: dict = {}
    for key, row in ablations.items():
        target = row.get("target", key.split("/")[0])
        if not any(k.startswith(f"{target}/experiment") for k in {**ablations, **summary}):
            reference = experiment_row(run_dir, target)
            if reference:
                summary[f"{target}/experiment (the config's SafeGene)"] = reference
        summary[key] = row
    lines = [
        "# SafeGene ablation (generated by scripts/safegene_ablation.py render; do not edit by hand)",
        "",
        "One target of the SmolLM2 run and the run's A and D; only the layer choice, τ's rank (dense, or truncated "
        "by SVD), the refusal targets (templates, or the aligned model's own refusals: used/shots), λ, and α's start "
        "and bound change.",
        "",
        "| target | variant | layers | τ rank | refusal targets | λ | α start | α bound | mean α | max α | loss before → after "
        "| HRR refusal % | HRR detector % | over-refusal % | utility % |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in summary.items():
        alphas = list(row["coefficients"].values())
        used = row.get("refusal_targets") or {}
        refusals = row.get("refusals", "templates")
        if used:
            refusals += f" {used['used']}/{used['used'] + used['skipped_complied']}"
        lines.append(
            f"| {row.get('target', key.split('/')[0])} | {key.split('/')[1]} | {len(row['layers'])} "
            f"| {row.get('rank') or 'dense'} | {refusals} | {row['lambda']} | {row.get('alpha_init', 0.5)} "
            f"| {row.get('alpha_max', 2.0)} | {sum(alphas) / len(alphas):.3f} | {max(alphas):.3f} | {row['loss'][0]:.3f} → {row['loss'][1]:.3f} "
            f"| {100 * row['hrr']['refusal']:.1f} | {100 * row['hrr'].get('detector', float('nan')):.1f} "
            f"| {100 * row['overrefusal']:.1f} | {100 * next(iter(row['utility'].values())):.1f} |"
        )
    Path(args.output).write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("run_dir")
    r.add_argument("--target", required=True)
    r.add_argument("--name", required=True)
    r.add_argument("--score", default="sensitivity", choices=["contrast", "sensitivity", "both"])
    r.add_argument("--cumulative", type=float, default=0.9)
    r.add_argument("--top-k", type=int, default=None)
    r.add_argument("--lambda", dest="lam", type=float, default=1.0)
    r.add_argument("--epochs", type=int, default=6)
    r.add_argument("--refusals", default="templates", choices=["templates", "aligned"])
    r.add_argument("--alpha-init", type=float, default=0.5)
    r.add_argument("--alpha-max", type=float, default=2.0, help="upper bound of each layer's α")
    r.add_argument("--min-rel-delta", type=float, default=0.05)
    r.add_argument(
        "--layers-from",
        default=None,
        help="reuse the selection of an earlier variant, or of the run itself ('experiment')",
    )
    r.add_argument("--n-harmful", type=int, default=32, help="harmful shots (HarmBench val)")
    r.add_argument("--rank", type=int, default=None, help="truncate τ to this SVD rank (default: dense τ)")
    r.set_defaults(func=run)
    g = sub.add_parser("render")
    g.add_argument("summary")
    g.add_argument("output")
    g.set_defaults(func=render)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
