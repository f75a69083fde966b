"""`seawall gene …`: extract, select, calibrate, apply, run a recipe, inspect an adapter, restore with a baseline."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    help="SafeGene safety adapters and the baselines (RESTA, Safe LoRA, SafeMERGE).", no_args_is_help=True
)
console = Console()

_HARMFUL = typer.Option("harmbench", "--harmful", help="Harmful prompt set (seawall.data name).")
_HARMFUL_SPLIT = typer.Option("val", "--harmful-split", help="Split of the harmful set ('' for none).")
_BENIGN = typer.Option("alpaca", "--benign", help="Benign prompt set (seawall.data name).")
_N_HARMFUL = typer.Option(32, "--n-harmful", help="Number of harmful prompts.")
_N_BENIGN = typer.Option(32, "--n-benign", help="Number of benign prompts.")
_SEED = typer.Option(0, "--seed", help="Sampling and training seed.")
_DATA_DIR = typer.Option(None, "--data-dir", help="Shared data folder.")


def _shots(harmful: str, harmful_split: str, benign: str, n_harmful: int, n_benign: int, seed: int, data_dir):
    from seawall.gene.shots import load_shots

    return load_shots(
        harmful=harmful,
        benign=benign,
        n_harmful=n_harmful,
        n_benign=n_benign,
        harmful_split=harmful_split or None,
        seed=seed,
        data_dir=data_dir,
    )


def _config(cls, path: Path | None, **overrides):
    from seawall.gene.config import load_yaml_config

    base = load_yaml_config(path, cls).model_dump() if path else {}
    base.update({k: v for k, v in overrides.items() if v is not None})
    return cls.model_validate(base)


@app.command()
def extract(
    aligned: str = typer.Argument(..., help="Aligned model A (folder with safetensors)."),
    degraded: str = typer.Argument(..., help="Degraded model D (same architecture)."),
    output: Path = typer.Option(..., "--output", "-o", help="Adapter folder to write."),
    form: str = typer.Option(None, "--form", help="delta (exact), lora (truncated SVD) or distilled."),
    rank: int = typer.Option(None, "--rank", help="SVD / distilled LoRA rank."),
    energy: float = typer.Option(
        None, "--energy", help="Keep the smallest rank with this energy share (lora)."
    ),
    module_types: str = typer.Option(
        None, "--module-types", help="Comma list, e.g. q_proj,v_proj (default all)."
    ),
    include_embeddings: bool = typer.Option(None, "--include-embeddings/--no-embeddings"),
    include_norms: bool = typer.Option(None, "--include-norms/--no-norms"),
    checksums: bool = typer.Option(None, "--checksums/--no-checksums", help="sha256 the source files."),
    config: Path = typer.Option(None, "--config", help="ExtractConfig YAML (flags override it)."),
    overwrite: bool = typer.Option(False, "--overwrite"),
    harmful: str = _HARMFUL,
    harmful_split: str = _HARMFUL_SPLIT,
    benign: str = _BENIGN,
    n_harmful: int = _N_HARMFUL,
    n_benign: int = _N_BENIGN,
    seed: int = _SEED,
    data_dir: str = _DATA_DIR,
) -> None:
    """Extract a safety adapter τ = A − D (dense, low-rank PEFT, or distilled) with its manifest."""
    from seawall.gene.config import ExtractConfig
    from seawall.gene.extraction import extract as run_extract

    cfg = _config(
        ExtractConfig,
        config,
        form=form,
        rank=rank,
        energy=energy,
        module_types=module_types.split(",") if module_types else None,
        include_embeddings=include_embeddings,
        include_norms=include_norms,
        checksums=checksums,
    )
    shots = (
        _shots(harmful, harmful_split, benign, n_harmful, n_benign, seed, data_dir)
        if cfg.form == "distilled"
        else None
    )
    adapter = run_extract(aligned, degraded, output, cfg, shots=shots, overwrite=overwrite)
    errors = [m.rel_error for m in adapter.manifest.modules.values() if m.rel_error is not None]
    extra = f", max relative SVD error {max(errors):.3g}" if errors else ""
    console.print(f"wrote {adapter.kind} adapter with {len(adapter.modules)} modules to {output}{extra}")


@app.command()
def select(
    adapter: Path = typer.Argument(..., help="Adapter folder (updated in place)."),
    aligned: str = typer.Option(None, "--aligned", help="Aligned model A (contrast score)."),
    degraded: str = typer.Option(
        None, "--degraded", help="Degraded model D (contrast; sensitivity subject)."
    ),
    model: str = typer.Option(None, "--model", help="Model to measure sensitivity on (default D)."),
    score: str = typer.Option(None, "--score", help="contrast, sensitivity or both."),
    top_k: int = typer.Option(None, "--top-k", help="Keep the k best layers."),
    cumulative: float = typer.Option(
        None, "--cumulative", help="Keep layers holding this share of the score."
    ),
    config: Path = typer.Option(None, "--config", help="SelectConfig YAML."),
    harmful: str = _HARMFUL,
    harmful_split: str = _HARMFUL_SPLIT,
    benign: str = _BENIGN,
    n_harmful: int = _N_HARMFUL,
    n_benign: int = _N_BENIGN,
    seed: int = _SEED,
    data_dir: str = _DATA_DIR,
) -> None:
    """Score layers from activations (contrast) and/or refusal-loss drop (sensitivity), select, plot."""
    from seawall.gene.adapter import SafetyAdapter
    from seawall.gene.config import SelectConfig
    from seawall.gene.selection import select_layers

    data = {}
    if config:
        from seawall.gene.config import load_yaml_config

        data = load_yaml_config(config, SelectConfig).model_dump()
    data.update(
        {k: v for k, v in {"score": score, "top_k": top_k, "cumulative": cumulative}.items() if v is not None}
    )
    if top_k is not None and cumulative is None:
        data["cumulative"] = None
    cfg = SelectConfig.model_validate(data)
    shots = _shots(harmful, harmful_split, benign, n_harmful, n_benign, seed, data_dir)
    ad = SafetyAdapter.load(adapter)
    layers = select_layers(ad, shots, aligned=aligned, degraded=degraded, model=model or degraded, config=cfg)
    console.print(f"selected layers {layers}; scores and plot in {adapter}")


@app.command()
def calibrate(
    adapter: Path = typer.Argument(..., help="Adapter folder (coefficients recorded in place)."),
    target: str = typer.Argument(..., help="Target model T (HF folder, or PEFT task adapter on its base)."),
    per_module_type: bool = typer.Option(None, "--per-module-type/--per-layer"),
    alpha_max: float = typer.Option(None, "--alpha-max"),
    lambda_retain: float = typer.Option(None, "--lambda", help="Weight of the retain KL."),
    max_epochs: int = typer.Option(None, "--epochs"),
    refusals: str = typer.Option(
        None,
        "--refusals",
        help="Refusal targets: 'templates', or 'aligned' (A's own refusals; needs --aligned).",
    ),
    aligned: str = typer.Option(None, "--aligned", help="Aligned model A (for --refusals aligned)."),
    config: Path = typer.Option(None, "--config", help="CalibrateConfig YAML."),
    harmful: str = _HARMFUL,
    harmful_split: str = _HARMFUL_SPLIT,
    benign: str = _BENIGN,
    n_harmful: int = _N_HARMFUL,
    n_benign: int = _N_BENIGN,
    seed: int = _SEED,
    data_dir: str = _DATA_DIR,
) -> None:
    """Fit one coefficient per selected layer on T from few shots; print α and save the loss curve."""
    from seawall.gene.adapter import SafetyAdapter
    from seawall.gene.calibration import calibrate as run_calibrate
    from seawall.gene.calibration import plot_loss_curve
    from seawall.gene.config import CalibrateConfig

    cfg = _config(
        CalibrateConfig,
        config,
        per_module_type=per_module_type,
        alpha_max=alpha_max,
        lambda_retain=lambda_retain,
        max_epochs=max_epochs,
        refusals=refusals,
        seed=seed,
    )
    shots = _shots(harmful, harmful_split, benign, n_harmful, n_benign, seed, data_dir)
    ad = SafetyAdapter.load(adapter)
    result = run_calibrate(ad, target, shots, cfg, aligned=aligned)
    plot_loss_curve(result, adapter / "calibration_loss.png")
    table = Table("group", "α")
    for group, alpha in result.coefficients.items():
        table.add_row(group, f"{alpha:.4f}")
    console.print(table)
    console.print(
        f"loss {result.initial_loss:.4f} → {result.final_loss:.4f} in {result.epochs} passes "
        f"({result.prepare_seconds:.1f} s preparation + {result.fit_seconds:.1f} s fitting); curve in {adapter / 'calibration_loss.png'}"
    )


@app.command("apply")
def apply_cmd(
    adapter: Path = typer.Argument(..., help="Adapter folder."),
    target: str = typer.Argument(..., help="Target model T."),
    output: Path = typer.Option(..., "--output", "-o"),
    format: str = typer.Option(
        "merged", "--format", help="merged (HF folder) or peft (adapter stacking on T)."
    ),
    overwrite: bool = typer.Option(False, "--overwrite"),
) -> None:
    """Write T' = T + Σ α·τ as merged weights or as a PEFT adapter with the coefficients folded in."""
    from seawall.gene.adapter import SafetyAdapter
    from seawall.gene.export import apply

    out = apply(SafetyAdapter.load(adapter), target, output, format=format, overwrite=overwrite)
    console.print(f"wrote {format} model to {out}")


@app.command()
def run(recipe: Path = typer.Argument(..., help="Recipe YAML (see docs/gene.md).")) -> None:
    """Run extract → select → calibrate → apply (or a baseline) from one recipe file."""
    from seawall.gene.pipeline import run_recipe

    summary = run_recipe(recipe)
    console.print(
        f"{summary['method']}: wrote {summary['format']} output to {summary['output']} in {summary['seconds']:.1f} s"
    )


@app.command()
def inspect(
    adapter: Path = typer.Argument(..., help="Adapter folder (or a folder written by apply)."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole manifest as JSON."),
) -> None:
    """Print an adapter's manifest: sources, modules, rank, layer scores, selection and coefficients."""
    from seawall.errors import ModelError
    from seawall.gene.adapter import MANIFEST_NAME, Manifest

    file = adapter / MANIFEST_NAME
    if not file.is_file():
        raise ModelError(f"{adapter}: no {MANIFEST_NAME}; not a safety adapter")
    raw = json.loads(file.read_text())
    if as_json:
        typer.echo(json.dumps(raw, indent=2))
        return
    m = Manifest.model_validate({k: v for k, v in raw.items() if k != "applied"})
    ranks = sorted({i.rank for i in m.modules.values() if i.rank is not None})
    console.print(f"[bold]{adapter}[/bold]: kind {m.kind}, {len(m.modules)} modules, {m.num_layers} layers")
    for role, fp in (("aligned", m.aligned), ("degraded", m.degraded)):
        console.print(
            f"  {role}: {fp.get('model_type')} arch {fp.get('arch_digest')} ({fp.get('num_parameters')} params)"
        )
    if ranks:
        errs = [i.rel_error for i in m.modules.values() if i.rel_error is not None]
        console.print(
            f"  ranks {ranks[0]}–{ranks[-1]}, relative SVD error ≤ {max(errs):.3g}"
            if errs
            else f"  ranks {ranks}"
        )
    table = Table("layer", *m.layer_scores.keys(), "selected", "α")
    per_type = bool(m.calibration.get("per_module_type"))
    for layer in range(m.num_layers):
        scores = [f"{v[layer]:.4f}" if layer < len(v) else "" for v in m.layer_scores.values()]
        chosen = m.selected_layers is None or layer in m.selected_layers
        if per_type:
            alpha = ", ".join(
                f"{k.split('.', 1)[1]}={v:.3f}"
                for k, v in m.coefficients.items()
                if k.split(".")[0] == str(layer)
            )
        else:
            alpha = f"{m.coefficients[str(layer)]:.4f}" if str(layer) in m.coefficients else ""
        table.add_row(str(layer), *scores, "yes" if chosen else "", alpha)
    console.print(table)
    if m.calibration:
        c = m.calibration
        console.print(
            f"  calibrated on {c.get('target')}: loss {c.get('initial_loss'):.4f} → {c.get('final_loss'):.4f}, "
            f"{c.get('epochs')} epochs, {c.get('seconds')} s"
        )
    if "applied" in raw:
        console.print(f"  applied to {raw['applied']['target']} as {raw['applied']['format']}")


@app.command()
def methods() -> None:
    """List the restoration methods and their sources."""
    from seawall.gene.methods.registry import METHODS, get_method

    get_method("safegene")
    table = Table("method", "source", "config fields")
    for name in METHODS.names():
        cls = METHODS.get(name)
        table.add_row(name, cls.source, ", ".join(cls.config_class.model_fields))
    console.print(table)


@app.command()
def restore(
    method: str = typer.Argument(..., help="safegene, resta, safe-lora or safemerge."),
    output: Path = typer.Option(..., "--output", "-o"),
    target: str = typer.Option(None, "--target", help="Target model T (resta, safegene)."),
    config: Path = typer.Option(None, "--config", help="The method's config YAML."),
    adapter: str = typer.Option(None, "--adapter", help="Safety adapter folder (safegene, resta)."),
    aligned: str = typer.Option(None, "--aligned"),
    degraded: str = typer.Option(None, "--degraded"),
    base: str = typer.Option(None, "--base", help="Unaligned base model (Safe LoRA / SafeMERGE subspace)."),
    task_lora: str = typer.Option(None, "--task-lora"),
    safety_lora: str = typer.Option(None, "--safety-lora"),
    overwrite: bool = typer.Option(False, "--overwrite"),
    harmful: str = _HARMFUL,
    harmful_split: str = _HARMFUL_SPLIT,
    benign: str = _BENIGN,
    n_harmful: int = _N_HARMFUL,
    n_benign: int = _N_BENIGN,
    seed: int = _SEED,
    data_dir: str = _DATA_DIR,
) -> None:
    """Restore a model with any registered method (one interface for SafeGene and the baselines)."""
    import yaml

    from seawall.gene.methods.registry import get_method

    cls = get_method(method)
    settings = yaml.safe_load(config.read_text()) if config else {}
    instance = cls(settings)
    needs_shots = method == "safegene" or bool(getattr(instance.config, "tune", False))
    shots = (
        _shots(harmful, harmful_split, benign, n_harmful, n_benign, seed, data_dir) if needs_shots else None
    )
    result = instance.apply(
        target,
        output,
        adapter=adapter,
        aligned=aligned,
        degraded=degraded,
        base=base,
        task_lora=task_lora,
        safety_lora=safety_lora,
        shots=shots,
        overwrite=overwrite,
    )
    console.print(f"{method}: wrote {result.format} output to {result.output}")
    console.print(
        json.dumps({k: v for k, v in result.report.items() if k != "cosines"}, indent=1, default=str)
    )
