"""`seawall gene run RECIPE.yaml`: extract → select → calibrate → apply from one file, or a baseline by name."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from seawall.gene.adapter import MANIFEST_NAME, SafetyAdapter, module_coefficients
from seawall.gene.calibration import calibrate, plot_loss_curve
from seawall.gene.config import Recipe, load_yaml_config
from seawall.gene.export import apply
from seawall.gene.extraction import extract
from seawall.gene.methods.registry import get_method
from seawall.gene.selection import select_layers
from seawall.gene.shots import Shots, load_shots
from seawall.io import atomic_write_json


def _path(base: Path, value: str | None) -> str | None:
    if value is None:
        return None
    path = Path(value).expanduser()
    if path.is_absolute():
        return str(path)
    candidate = base / path
    # a bare name that is not a local path is left for seawall.models to resolve (packaged model, hub id)
    return str(candidate) if candidate.exists() or "/" in value or value.startswith(".") else value


def recipe_shots(recipe: Recipe) -> Shots:
    """The recipe's few-shot prompts from the shared data sets."""
    s = recipe.shots
    return load_shots(
        harmful=s.harmful,
        benign=s.benign,
        n_harmful=s.n_harmful,
        n_benign=s.n_benign,
        harmful_split=s.harmful_split,
        benign_split=s.benign_split,
        seed=s.seed,
        data_dir=recipe.data_dir,
    )


def run_recipe(
    recipe: Recipe | str | Path, base_dir: Path | None = None, shots: Shots | None = None
) -> dict[str, Any]:
    """Run a whole recipe; paths are relative to the recipe file. Returns (and writes) a run summary."""
    if not isinstance(recipe, Recipe):
        base_dir = Path(recipe).resolve().parent
        recipe = load_yaml_config(recipe, Recipe)
    base = base_dir or Path.cwd()
    p = {
        k: _path(base, getattr(recipe, k))
        for k in ("aligned", "degraded", "base", "target", "task_lora", "safety_lora")
    }
    # written paths are always relative to the recipe file
    p["adapter"] = str(base / recipe.adapter) if recipe.adapter else None
    output = str(base / recipe.output)
    started = time.perf_counter()
    summary: dict[str, Any] = {"method": recipe.method, "recipe": recipe.model_dump(mode="json")}
    if recipe.method != "safegene":
        needs_shots = bool(recipe.method_config.get("tune"))
        result = get_method(recipe.method)(recipe.method_config).apply(
            p["target"],
            output,
            aligned=p["aligned"],
            degraded=p["degraded"],
            base=p["base"],
            task_lora=p["task_lora"],
            safety_lora=p["safety_lora"],
            adapter=p["adapter"],
            shots=(shots or recipe_shots(recipe)) if needs_shots else None,
            overwrite=recipe.overwrite,
        )
        summary.update(output=str(result.output), format=result.format, report=result.report)
    else:
        shots = shots or recipe_shots(recipe)
        adapter_dir = Path(p["adapter"] or Path(output).with_name(Path(output).name + "-adapter"))
        if (adapter_dir / MANIFEST_NAME).is_file() and not recipe.overwrite:
            adapter = SafetyAdapter.load(adapter_dir)
        else:
            adapter = extract(
                p["aligned"],
                p["degraded"],
                adapter_dir,
                recipe.extract,
                shots=shots,
                overwrite=recipe.overwrite,
            )
        # This run's selection and fit are handed on explicitly (and recorded in the recipe's adapter folder).
        layers = (
            select_layers(
                adapter,
                shots,
                aligned=p["aligned"],
                degraded=p["degraded"],
                model=p["degraded"],
                config=recipe.select,
            )
            if recipe.select is not None
            else adapter.manifest.selected_layers
        )
        result = calibrate(adapter, p["target"], shots, recipe.calibrate, aligned=p["aligned"], layers=layers)
        plot_loss_curve(result, adapter_dir / "calibration_loss.png")
        out = apply(
            adapter,
            p["target"],
            output,
            recipe.apply.format,
            coefficients=module_coefficients(
                adapter.modules, layers, result.coefficients, result.per_module_type
            ),
            overwrite=recipe.overwrite,
            max_shard_bytes=recipe.apply.max_shard_bytes,
        )
        summary.update(
            output=str(out),
            format=recipe.apply.format,
            adapter=str(adapter_dir),
            selected_layers=layers,
            coefficients=result.coefficients,
            loss={"initial": result.initial_loss, "final": result.final_loss, "curve": result.loss_curve},
            calibration_seconds=result.seconds,
        )
    summary["seconds"] = round(time.perf_counter() - started, 3)
    atomic_write_json(Path(summary["output"]) / "seawall_run.json", summary)
    return summary
