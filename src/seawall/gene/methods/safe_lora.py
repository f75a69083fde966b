"""Safe LoRA (Hsu, Tsai, Lin, Chen, Yu & Huang, "Safe LoRA: the Silver Lining of Reducing Safety Risks when
Fine-tuning Large Language Models", NeurIPS 2024, arXiv:2405.16833; code: github.com/IBM/SafeLoRA).

Rule implemented (checked against the public implementation's `get_aligned_matrix` / `projected_weighted`):
for every module m of the task LoRA, V_m = W_aligned − W_base (unaligned base), C_m = V_m V_mᵀ / ‖V_m‖_F
(Frobenius norm, as `torch.norm(vec)` there; C is not an exact projector), ΔW_m = B_m A_m (with LoRA scaling).
cos_m = cos(vec(C_m ΔW_m), vec(ΔW_m)), rounded to 5 decimals as in the public code.
- select `threshold` (default, τ = 0.5): project every module with cos_m ≤ τ;
- select `number`: project the k modules with the lowest cos_m.
Projection replaces B_m by C_m B_m (so ΔW_m ← C_m ΔW_m); A_m is kept. C_m is never formed: C·B = V(VᵀB)/‖V‖_F.
Training-free and data-free. In SafeGene terms, `base` may be the degraded model D (then V = τ).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from seawall.errors import ModelError
from seawall.gene.adapter import read_peft_lora, write_peft_lora
from seawall.gene.methods.base import Method, MethodResult
from seawall.gene.methods.registry import METHODS
from seawall.io import atomic_dir, atomic_write_json
from seawall.models.checkpoint import open_checkpoint


def project(v: torch.Tensor, lora_b: torch.Tensor) -> torch.Tensor:
    """C·B with C = V Vᵀ / ‖V‖_F, without forming C (out×out)."""
    norm = torch.linalg.norm(v)
    if norm < 1e-12:
        return torch.zeros_like(lora_b)
    return v @ (v.T @ lora_b) / norm


def safelora_cosine(v: torch.Tensor, lora_a: torch.Tensor, lora_b: torch.Tensor) -> float:
    """cos(vec(C·B·A), vec(B·A)), rounded to 5 decimals like the public Safe LoRA code."""
    projected = project(v, lora_b) @ lora_a
    original = lora_b @ lora_a
    cos = torch.nn.functional.cosine_similarity(projected.reshape(1, -1), original.reshape(1, -1)).item()
    return round(float(cos), 5)


def alignment_cosines(
    factors: dict[str, tuple[torch.Tensor, torch.Tensor]], aligned: str | Path, base: str | Path
) -> dict[str, float]:
    """Safe LoRA cosine of every task-LoRA module against V = W_aligned − W_base (streamed per module)."""
    ckpt_al, ckpt_base = open_checkpoint(aligned), open_checkpoint(base)
    out = {}
    for module, (lora_a, lora_b) in factors.items():
        name = f"{module}.weight"
        for ckpt, what in ((ckpt_al, "aligned"), (ckpt_base, "base")):
            if name not in ckpt:
                raise ModelError(
                    f"{what} model {ckpt.root}: architecture mismatch: module {name!r} is missing"
                )
            if list(ckpt.shape(name)) != [lora_b.shape[0], lora_a.shape[1]]:
                raise ModelError(
                    f"{what} model {ckpt.root}: architecture mismatch: module {name!r} has shape "
                    f"{list(ckpt.shape(name))}, the LoRA expects {[lora_b.shape[0], lora_a.shape[1]]}"
                )
        v = ckpt_al.get(name).float() - ckpt_base.get(name).float()
        out[module] = safelora_cosine(v, lora_a, lora_b)
    return out


class SafeLoraConfig(BaseModel):
    """Safe LoRA hyper-parameters (defaults of the public code: threshold 0.5, number mode k = 10)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    select: Literal["threshold", "number"] = Field(
        "threshold", description="cos ≤ threshold, or the k lowest"
    )
    threshold: float = Field(0.5, description="project modules whose cosine is at most this")
    num_layers: int = Field(10, ge=1, description="k for select=number")


@METHODS.register("safe-lora")
class SafeLora(Method):
    """Project the task LoRA onto the alignment subspace where it strays from it."""

    name = "safe-lora"
    config_class = SafeLoraConfig
    source = "Hsu et al., NeurIPS 2024, arXiv:2405.16833"

    def decide(self, cosines: dict[str, float]) -> list[str]:
        """Modules to project, by the configured rule."""
        if self.config.select == "threshold":
            return [m for m, c in cosines.items() if c <= self.config.threshold]
        return sorted(cosines, key=lambda m: (cosines[m], m))[: self.config.num_layers]

    def apply(self, target: str | Path | None, output: str | Path, **inputs: Any) -> MethodResult:
        """Write the projected task LoRA (PEFT) to `output`; needs task_lora, aligned and base."""
        task_lora, aligned, base = self._need(inputs, "task_lora", "aligned", "base")
        factors, config = read_peft_lora(task_lora)
        cosines = alignment_cosines(factors, aligned, base)
        chosen = set(self.decide(cosines))
        new = {}
        ckpt_al, ckpt_base = open_checkpoint(aligned), open_checkpoint(base)
        for module, (lora_a, lora_b) in factors.items():
            if module in chosen:
                v = ckpt_al.get(f"{module}.weight").float() - ckpt_base.get(f"{module}.weight").float()
                lora_b = project(v, lora_b)
            new[module] = (lora_a, lora_b)
        report = {
            "rule": f"B <- C B where cos {'<=' + str(self.config.threshold) if self.config.select == 'threshold' else 'among k lowest'}",
            "cosines": cosines,
            "projected": sorted(chosen),
            "num_projected": len(chosen),
            "num_modules": len(cosines),
        }
        with atomic_dir(output, overwrite=bool(inputs.get("overwrite"))) as tmp:
            write_peft_lora(
                tmp,
                new,
                base_model=config.get("base_model_name_or_path") or (str(target) if target else None),
            )
            atomic_write_json(tmp / "safe_lora_report.json", report)
        return MethodResult(Path(output), "peft", report)
