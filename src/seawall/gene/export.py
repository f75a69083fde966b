"""Apply a (calibrated) safety adapter to a target T: merged HF weights, or a PEFT adapter with α folded in.

merged: W' = W + α_m · τ_m, streamed tensor by tensor from T's checkpoint into a new sharded HF folder.
peft:   a LoRA with scaling 1 whose B·A = α_m · τ_m. A low-rank adapter keeps its rank (B ← α·B); a dense delta
        is written exactly at rank min(out, in) (A = I, B = α·τ when in ≤ out, else A = α·τ, B = I).
Modules with α = 0 are left out. Both outputs give the same logits on T (tested to 1e-5).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from seawall.errors import ModelError
from seawall.gene.adapter import MANIFEST_NAME, Manifest, SafetyAdapter, write_peft_lora
from seawall.gene.modeling import resolve
from seawall.io import atomic_dir, atomic_write_json
from seawall.models.checkpoint import DEFAULT_SHARD_BYTES, open_checkpoint


def _copy_side_files(source: Path, folder: Path) -> None:
    for item in source.iterdir():
        if item.is_file() and not item.name.endswith(
            (".safetensors", ".safetensors.index.json", ".bin", ".pt")
        ):
            shutil.copy2(item, folder / item.name)


def merge_deltas(
    target: str | Path,
    output: str | Path,
    deltas: Any,
    coefficients: dict[str, float],
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    extra_files: dict[str, Any] | None = None,
    progress: bool = True,
) -> Path:
    """Stream T's checkpoint into `output`, adding coefficient·delta(module) to each listed module's weight."""
    target = resolve(target)
    ckpt = open_checkpoint(target)
    shapes = ckpt.shapes()
    for module, coef in coefficients.items():
        name = f"{module}.weight"
        if coef and name not in shapes:
            raise ModelError(f"target {target}: architecture mismatch: module {name!r} is missing")
    with atomic_dir(output, overwrite=overwrite) as tmp:
        from seawall.models.checkpoint import ShardedWriter

        writer = ShardedWriter(tmp, max_shard_bytes=max_shard_bytes)
        for name in tqdm(ckpt.names(), desc="merge", disable=not progress, unit="tensor"):
            tensor = ckpt.get(name)
            module = name.removesuffix(".weight")
            coef = coefficients.get(module, 0.0)
            if coef:
                delta = deltas(module)
                if list(delta.shape) != list(tensor.shape):
                    raise ModelError(
                        f"target {target}: architecture mismatch: module {name!r} has shape "
                        f"{list(tensor.shape)}, expected {list(delta.shape)}"
                    )
                tensor = (tensor.float() + coef * delta.float()).to(tensor.dtype)
            writer.add(name, tensor)
        writer.close()
        _copy_side_files(target, tmp)
        for file, obj in (extra_files or {}).items():
            atomic_write_json(tmp / file, obj)
    return Path(output)


def peft_factors(adapter: SafetyAdapter, coefficients: dict[str, float]) -> dict[str, tuple[Any, Any]]:
    """{module: (A, B)} with B·A = α·τ for every module with α ≠ 0."""
    out = {}
    for module, coef in coefficients.items():
        if not coef:
            continue
        if adapter.kind == "delta":
            tau = adapter.delta(module)
            out_f, in_f = tau.shape
            if in_f <= out_f:
                out[module] = (torch.eye(in_f), coef * tau)
            else:
                out[module] = (coef * tau, torch.eye(out_f))
        else:
            lora_a, lora_b = adapter.factors(module)
            out[module] = (lora_a, coef * lora_b)
    if not out:
        raise ModelError(
            "every coefficient is 0: nothing to apply (check the layer selection and calibration)"
        )
    return out


def apply(
    adapter: SafetyAdapter,
    target: str | Path,
    output: str | Path,
    format: str = "merged",
    coefficients: dict[str, float] | None = None,
    overwrite: bool = False,
    max_shard_bytes: int = DEFAULT_SHARD_BYTES,
    progress: bool = True,
    manifest: Manifest | None = None,
) -> Path:
    """Write T' = T + Σ α·τ as a merged HF folder or a PEFT adapter stacking on T; returns the output folder.

    `coefficients` (per module) default to the manifest's recorded ones; `manifest` is the one written beside the
    output (default: the adapter's), so a run can record its own selection and fit there.
    """
    coefficients = coefficients if coefficients is not None else adapter.coefficients()
    manifest = (manifest or adapter.manifest).model_dump(mode="json")
    manifest["applied"] = {"target": str(target), "format": format, "coefficients": coefficients}
    if format == "merged":
        target_path = resolve(target)
        adapter.check_compatible(open_checkpoint(target_path).shapes(), f"target {target_path}")
        return merge_deltas(
            target_path,
            output,
            adapter.delta,
            coefficients,
            overwrite=overwrite,
            max_shard_bytes=max_shard_bytes,
            extra_files={MANIFEST_NAME: manifest},
            progress=progress,
        )
    if format == "peft":
        factors = peft_factors(adapter, coefficients)
        with atomic_dir(output, overwrite=overwrite) as tmp:
            write_peft_lora(tmp, factors, base_model=str(target))
            atomic_write_json(tmp / MANIFEST_NAME, manifest)
        return Path(output)
    raise ModelError(f"unknown output format {format!r}; use 'merged' or 'peft'")
