"""SafeMERGE (Djuhera, Kadhe, Ahmed, Zawad & Boche, "SafeMERGE: Preserving Safety Alignment in Fine-Tuned Large
Language Models via Selective Layer-Wise Model Merging", 2025, arXiv:2503.17239; code: github.com/aladinD/SafeMERGE).

Rule implemented (checked against the public `SafeLoRAMerger.add_weighted_adapter_safelora`): for every module m of
the task LoRA, compute the Safe LoRA cosine cos_m = cos(vec(C_m ΔW_m), vec(ΔW_m)) with C_m = V_m V_mᵀ/‖V_m‖_F,
V_m = W_aligned − W_base. Where cos_m < threshold (default 0.35) the module's task LoRA is merged with the safety
LoRA with weights (w_task, w_safety) = (0.8, 0.2); elsewhere the task LoRA is kept (weights (1, 0)).
Combination `linear` reproduces PEFT's factor-level "linear" merge used by the public code:
A' = Σ_i √(w_i s_i)·A_i, B' = Σ_i √(w_i s_i)·B_i (s_i = LoRA scaling; equal ranks required) — note that B'A'
contains cross terms B_i A_j. Combination `cat` is the exact weighted sum ΔW' = Σ_i w_i s_i B_i A_i (rank r₁+r₂).
A module missing from the safety LoRA keeps its task update (the public code zeroes it).
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
from seawall.gene.methods.safe_lora import alignment_cosines
from seawall.io import atomic_dir, atomic_write_json


def merge_pair(
    task: tuple[torch.Tensor, torch.Tensor],
    safety: tuple[torch.Tensor, torch.Tensor],
    weights: tuple[float, float],
    combination: str,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Merge two balanced LoRA factor pairs (√s·A, √s·B) with weights, by PEFT 'linear' or exact 'cat'."""
    (a1, b1), (a2, b2) = task, safety
    w1, w2 = weights
    if combination == "linear":
        if a1.shape != a2.shape or b1.shape != b2.shape:
            raise ModelError(
                f"linear merge needs equal LoRA shapes, got task {list(b1.shape)}x{list(a1.shape)} and safety "
                f"{list(b2.shape)}x{list(a2.shape)}; use combination: cat"
            )
        return w1**0.5 * a1 + w2**0.5 * a2, w1**0.5 * b1 + w2**0.5 * b2
    return torch.cat([a1, a2], 0), torch.cat([w1 * b1, w2 * b2], 1)


class SafeMergeConfig(BaseModel):
    """SafeMERGE hyper-parameters (defaults of the public code)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    threshold: float = Field(0.35, description="merge modules whose Safe LoRA cosine is below this")
    weights: tuple[float, float] = Field((0.8, 0.2), description="(task, safety) weights where merged")
    combination: Literal["linear", "cat"] = Field(
        "linear", description="PEFT factor-level linear, or exact cat"
    )


@METHODS.register("safemerge")
class SafeMerge(Method):
    """Merge the task LoRA with a safety LoRA only in modules that stray from the alignment subspace."""

    name = "safemerge"
    config_class = SafeMergeConfig
    source = "Djuhera et al. 2025, arXiv:2503.17239"

    def apply(self, target: str | Path | None, output: str | Path, **inputs: Any) -> MethodResult:
        """Write the merged LoRA (PEFT) to `output`; needs task_lora, safety_lora, aligned and base."""
        task_lora, safety_lora, aligned, base = self._need(
            inputs, "task_lora", "safety_lora", "aligned", "base"
        )
        task, config = read_peft_lora(task_lora)
        safety, _ = read_peft_lora(safety_lora)
        cosines = alignment_cosines(task, aligned, base)
        merged, new = [], {}
        for module, pair in task.items():
            if cosines[module] < self.config.threshold and module in safety:
                new[module] = merge_pair(pair, safety[module], self.config.weights, self.config.combination)
                merged.append(module)
            else:
                new[module] = pair
        report = {
            "rule": f"merge (task, safety) = {list(self.config.weights)} ({self.config.combination}) where cos < "
            f"{self.config.threshold}",
            "cosines": cosines,
            "merged": merged,
            "num_merged": len(merged),
            "num_modules": len(task),
            "missing_in_safety": sorted(set(task) - set(safety)),
        }
        with atomic_dir(output, overwrite=bool(inputs.get("overwrite"))) as tmp:
            write_peft_lora(
                tmp,
                new,
                base_model=config.get("base_model_name_or_path") or (str(target) if target else None),
            )
            atomic_write_json(tmp / "safemerge_report.json", report)
        return MethodResult(Path(output), "peft", report)
