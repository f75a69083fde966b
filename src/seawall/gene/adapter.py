"""The safety adapter: per-module safety vectors τ (dense or low-rank) plus a manifest that every step extends.

On disk (one folder):
- `safegene.json` — the manifest (fingerprints of A and D, modules, rank, settings, scores, selection, coefficients);
- kind `delta`: `delta/model*.safetensors` (+ index when sharded), keys `<module>.weight` = τ = W_A − W_D;
- kind `lora` / `distilled`: a PEFT LoRA adapter (`adapter_config.json`, `adapter_model.safetensors`) with τ ≈ B·A
  (scaling 1), loadable by `PeftModel.from_pretrained`; the raw adapter adds τ with coefficient 1 everywhere.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from seawall.errors import ModelError
from seawall.io import atomic_dir, atomic_write_json
from seawall.models.checkpoint import ShardedWriter, open_checkpoint, require_same_architecture

MANIFEST_NAME = "safegene.json"
PEFT_PREFIX = "base_model.model."
_LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")
_NORM_HINTS = ("norm", "ln_")
_EMBED_HINTS = ("embed_tokens", "wte", "lm_head", "embed_in", "embed_out")


def layer_index(name: str) -> int | None:
    """The transformer block index in a module or tensor name ('model.layers.3.mlp.up_proj' → 3), else None."""
    match = _LAYER_RE.search(name)
    return int(match.group(1)) if match else None


def module_type(name: str) -> str:
    """The module's kind, i.e. its last name component without '.weight' ('…self_attn.q_proj' → 'q_proj')."""
    return name.removesuffix(".weight").rsplit(".", 1)[-1]


def tensor_kind(
    name: str, shape: tuple[int, ...] | list[int]
) -> Literal["linear", "norm", "embedding", "other"]:
    """Classify a checkpoint tensor: a linear projection of a block, a norm, an embedding/head, or other."""
    if not name.endswith(".weight"):
        return "other"
    if any(h in name for h in _EMBED_HINTS):
        return "embedding"
    if layer_index(name) is not None and len(shape) == 2:
        return "linear"
    if any(h in module_type(name) for h in _NORM_HINTS) and len(shape) == 1:
        return "norm"
    return "other"


def group_key(module: str, per_module_type: bool) -> str:
    """The coefficient group of a module: its layer ('3'), or layer and type ('3.q_proj'); 'global' outside blocks."""
    layer = layer_index(module)
    if layer is None:
        return "global"
    return f"{layer}.{module_type(module)}" if per_module_type else str(layer)


def module_coefficients(
    modules: list[str],
    layers: list[int] | None,
    groups: dict[str, float] | None = None,
    per_module_type: bool = False,
) -> dict[str, float]:
    """α per module: the fitted α of its group (0 when its group was not fitted), else 1 on `layers` and 0 elsewhere.

    `layers` None means no selection: every module gets 1. Callers pass one run's selection and fit explicitly,
    so a run never picks up another run's coefficients from a shared manifest.
    """
    if groups:
        return {m: float(groups.get(group_key(m, per_module_type), 0.0)) for m in modules}
    chosen = None if layers is None else set(layers)
    return {m: 1.0 if chosen is None or layer_index(m) in chosen else 0.0 for m in modules}


class ModuleInfo(BaseModel):
    """What the adapter holds for one module."""

    shape: list[int]
    rank: int | None = Field(None, description="LoRA rank (None for a dense delta)")
    norm: float = Field(description="Frobenius norm of the exact delta τ")
    error: float | None = Field(None, description="‖τ − B·A‖_F for the low-rank form")
    rel_error: float | None = Field(None, description="error / ‖τ‖_F")


class Manifest(BaseModel):
    """Everything needed to reuse, audit and re-apply a safety adapter."""

    format_version: int = 1
    kind: Literal["delta", "lora", "distilled"]
    num_layers: int
    aligned: dict[str, Any] = Field(description="fingerprint of the aligned model A")
    degraded: dict[str, Any] = Field(description="fingerprint of the degraded model D")
    modules: dict[str, ModuleInfo]
    extraction: dict[str, Any] = Field(default_factory=dict)
    layer_scores: dict[str, list[float]] = Field(default_factory=dict)
    selection: dict[str, Any] = Field(default_factory=dict)
    selected_layers: list[int] | None = None
    coefficients: dict[str, float] = Field(default_factory=dict)
    calibration: dict[str, Any] = Field(default_factory=dict)

    def module_shapes(self) -> dict[str, list[int]]:
        """{tensor name: shape} of the modules the adapter changes, in checkpoint naming ('….weight')."""
        return {f"{m}.weight": info.shape for m, info in self.modules.items()}


class SafetyAdapter:
    """Safety vectors per module, read lazily from an adapter folder or held in memory, with their manifest."""

    def __init__(self, manifest: Manifest, tensors: dict[str, Any] | None = None, path: Path | None = None):
        self.manifest = manifest
        self.path = Path(path) if path else None
        self._tensors = tensors
        self._ckpt = None
        if tensors is None and self.path is None:
            raise ValueError("a SafetyAdapter needs in-memory tensors or a folder")

    # ---- reading -------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> SafetyAdapter:
        """Open an adapter folder written by `save` (tensors are read lazily)."""
        path = Path(path)
        manifest_file = path / MANIFEST_NAME
        if not manifest_file.is_file():
            raise ModelError(
                f"{path}: not a safety adapter (no {MANIFEST_NAME}); create one with `seawall gene extract`"
            )
        try:
            manifest = Manifest.model_validate_json(manifest_file.read_text())
        except ValueError as error:
            raise ModelError(f"{manifest_file}: invalid manifest ({error})") from error
        return cls(manifest, path=path)

    @property
    def kind(self) -> str:
        """'delta', 'lora' or 'distilled'."""
        return self.manifest.kind

    @property
    def modules(self) -> list[str]:
        """Module names ('model.layers.0.self_attn.q_proj'), in manifest order."""
        return list(self.manifest.modules)

    @property
    def layers(self) -> list[int]:
        """Block indices the adapter touches."""
        return sorted({i for m in self.modules if (i := layer_index(m)) is not None})

    def _keys(self, module: str) -> list[str]:
        if self.kind == "delta":
            return [f"{module}.weight"]
        return [f"{PEFT_PREFIX}{module}.lora_A.weight", f"{PEFT_PREFIX}{module}.lora_B.weight"]

    def _get(self, key: str) -> Any:
        if self._tensors is not None:
            return self._tensors[key]
        if self._ckpt is None:
            assert self.path is not None
            folder = self.path / "delta" if self.kind == "delta" else self.path / "adapter_model.safetensors"
            self._ckpt = open_checkpoint(folder)
        return self._ckpt.get(key)

    def factors(self, module: str) -> tuple[Any, Any]:
        """(A, B) with τ ≈ B @ A for a low-rank adapter; A is r×in, B is out×r."""
        if self.kind == "delta":
            raise ModelError(f"adapter {self.path or ''} is dense (kind 'delta'); it has no LoRA factors")
        key_a, key_b = self._keys(module)
        return self._get(key_a).float(), self._get(key_b).float()

    def delta(self, module: str) -> Any:
        """The dense safety vector τ of one module (float32)."""
        if module not in self.manifest.modules:
            raise ModelError(f"adapter has no module {module!r}")
        if self.kind == "delta":
            return self._get(f"{module}.weight").float()
        lora_a, lora_b = self.factors(module)
        return lora_b @ lora_a

    # ---- coefficients --------------------------------------------------------------------------------------
    def coefficients(self) -> dict[str, float]:
        """The coefficient per module recorded in the manifest (what `gene calibrate` then `gene apply` use)."""
        manifest = self.manifest
        return module_coefficients(
            self.modules,
            manifest.selected_layers,
            manifest.coefficients or None,
            bool(manifest.calibration.get("per_module_type")),
        )

    def check_compatible(self, shapes: dict[str, Any], what: str) -> None:
        """Raise ModelError naming the first module whose shape differs from (or is missing in) `shapes`."""
        require_same_architecture(self.manifest.module_shapes(), shapes, what)

    # ---- writing -------------------------------------------------------------------------------------------
    def save(self, path: str | Path, overwrite: bool = False) -> Path:
        """Write the adapter folder atomically (manifest + tensors)."""
        path = Path(path)
        if self.path is not None and path.resolve() == self.path.resolve():
            self.save_manifest()
            return path
        with atomic_dir(path, overwrite=overwrite) as tmp:
            self._write_tensors(tmp)
            atomic_write_json(tmp / MANIFEST_NAME, self.manifest.model_dump(mode="json"))
        self.path = path
        self._ckpt = None
        return path

    def save_manifest(self) -> None:
        """Rewrite the manifest of an adapter that lives in a folder (after select/calibrate added to it)."""
        if self.path is None:
            raise ModelError("this adapter has no folder yet; call save(path)")
        atomic_write_json(self.path / MANIFEST_NAME, self.manifest.model_dump(mode="json"))

    def _write_tensors(self, folder: Path) -> None:
        if self._tensors is None:
            assert self.path is not None
            for item in self.path.iterdir():
                if item.name == MANIFEST_NAME:
                    continue
                if item.is_dir():
                    shutil.copytree(item, folder / item.name)
                else:
                    shutil.copy2(item, folder / item.name)
            return
        if self.kind == "delta":
            writer = ShardedWriter(folder / "delta")
            for module in self.modules:
                writer.add(f"{module}.weight", self._tensors[f"{module}.weight"])
            writer.close()
        else:
            write_peft_lora(
                folder,
                {m: (self._tensors[self._keys(m)[0]], self._tensors[self._keys(m)[1]]) for m in self.modules},
            )


def write_peft_lora(
    folder: Path,
    factors: dict[str, tuple[Any, Any]],
    base_model: str | None = None,
    metadata: dict | None = None,
) -> None:
    """Write {module: (A, B)} as a PEFT LoRA adapter with scaling 1 (lora_alpha = r for every module)."""
    from peft import LoraConfig

    if not factors:
        raise ModelError("no modules to write into the LoRA adapter")
    ranks = {m: int(a.shape[0]) for m, (a, _) in factors.items()}
    top = max(ranks.values())
    pattern = {m: r for m, r in ranks.items() if r != top}
    config = LoraConfig(
        r=top,
        lora_alpha=top,
        target_modules=sorted(factors),
        rank_pattern=pattern,
        alpha_pattern=dict(pattern),
        lora_dropout=0.0,
        bias="none",
        task_type="CAUSAL_LM",
        base_model_name_or_path=base_model,
    )
    folder.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(folder))
    writer = ShardedWriter(folder, prefix="adapter_model", max_shard_bytes=1 << 62, metadata=metadata)
    for module, (lora_a, lora_b) in factors.items():
        writer.add(f"{PEFT_PREFIX}{module}.lora_A.weight", lora_a.contiguous())
        writer.add(f"{PEFT_PREFIX}{module}.lora_B.weight", lora_b.contiguous())
    writer.close()


def read_peft_lora(folder: str | Path) -> tuple[dict[str, tuple[Any, Any]], dict[str, Any]]:
    """Read a PEFT LoRA adapter folder into balanced factors {module: (√s·A, √s·B)} (s = scaling) and its config.

    B·A of the result is the module's full update s·B·A; splitting s evenly keeps PEFT's factor-level merges
    (which weight A and B by √(w·s)) reproducible from the returned factors.
    """
    folder = Path(folder)
    config_file = folder / "adapter_config.json"
    if not config_file.is_file():
        raise ModelError(f"{folder}: not a PEFT adapter (no adapter_config.json)")
    config = json.loads(config_file.read_text())
    if config.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"{folder}: peft_type {config.get('peft_type')!r} is not LORA")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{folder}: no adapter_model.safetensors (only safetensors adapters are supported)")
    ckpt = open_checkpoint(weights)
    pairs: dict[str, dict[str, Any]] = {}
    for name in ckpt.names():
        for part in ("lora_A", "lora_B"):
            marker = f".{part}."
            if marker in name:
                module = name.split(marker)[0].removeprefix(PEFT_PREFIX)
                pairs.setdefault(module, {})[part] = name
    rank_pattern = config.get("rank_pattern") or {}
    alpha_pattern = config.get("alpha_pattern") or {}
    from peft.utils.other import get_pattern_key

    out: dict[str, tuple[Any, Any]] = {}
    for module, parts in pairs.items():
        if set(parts) != {"lora_A", "lora_B"}:
            raise ModelError(f"{weights}: module {module!r} lacks lora_A or lora_B")
        lora_a = ckpt.get(parts["lora_A"]).float()
        lora_b = ckpt.get(parts["lora_B"]).float()
        rank = (
            rank_pattern.get(get_pattern_key(rank_pattern, module), config["r"])
            if rank_pattern
            else config["r"]
        )
        alpha = (
            alpha_pattern.get(get_pattern_key(alpha_pattern, module), config["lora_alpha"])
            if alpha_pattern
            else config["lora_alpha"]
        )
        scaling = alpha / (rank**0.5 if config.get("use_rslora") else rank)
        out[module] = (lora_a * scaling**0.5, lora_b * scaling**0.5)
    return out, config
