"""RESTA / task arithmetic (Bhardwaj, Anh & Poria, "Language Models are Homer Simpson! Safety Re-Alignment of
Fine-tuned Language Models through Task Arithmetic", ACL 2024; https://github.com/declare-lab/resta).

Rule implemented: T' = T + β·τ with τ = W_A − W_D on every block linear module (all layers, one global β).
β is fixed (`beta`, default 1.0), or, with `tune: true`, chosen from `betas` as the value with the lowest SafeGene
calibration loss (refusal CE + λ·retain KL) on the same few-shot set SafeGene uses — so both methods see the same
data. The paper adds the safety vector with a fixed weight and optionally DARE-sparsifies it; DARE is not
implemented here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field

from seawall.gene.adapter import SafetyAdapter, layer_index
from seawall.gene.calibration import CalibrationObjective, DeltaForward, prepare_data
from seawall.gene.config import CalibrateConfig, ExtractConfig
from seawall.gene.export import apply as apply_adapter
from seawall.gene.export import merge_deltas
from seawall.gene.methods.base import Method, MethodResult
from seawall.gene.methods.registry import METHODS
from seawall.models.checkpoint import open_checkpoint


class RestaConfig(BaseModel):
    """RESTA hyper-parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    beta: float = Field(1.0, ge=0, description="global coefficient β on the safety vector")
    tune: bool = Field(False, description="pick β from `betas` by the few-shot calibration loss")
    betas: list[float] = Field(default_factory=lambda: [0.25, 0.5, 0.75, 1.0, 1.25, 1.5])
    format: str = Field("merged", description="'merged' HF folder or 'peft' adapter (needs an adapter input)")
    calibrate: CalibrateConfig = CalibrateConfig()


@METHODS.register("resta")
class Resta(Method):
    """T' = T + β·(W_A − W_D) on all layers."""

    name = "resta"
    config_class = RestaConfig
    source = "Bhardwaj et al. 2024, arXiv:2402.11746"

    def tune_beta(
        self, adapter: SafetyAdapter, target: Any, tokenizer: Any, shots: Any
    ) -> tuple[float, dict]:
        """β in `betas` with the lowest calibration loss on the shots; returns (β, {β: loss})."""
        from seawall.gene.modeling import load_causal_lm

        model = load_causal_lm(target)
        modules = [m for m in adapter.modules if layer_index(m) is not None]
        forward = DeltaForward(model, adapter, modules)
        forward.groups = ["all"]
        forward.group_of = [0] * len(modules)
        data = prepare_data(model, tokenizer, shots, self.config.calibrate)
        objective = CalibrationObjective(forward, data, self.config.calibrate)
        losses = {b: objective.value(torch.tensor([b])) for b in self.config.betas}
        return min(losses, key=lambda b: (losses[b], b)), losses

    def apply(self, target: str | Path | None, output: str | Path, **inputs: Any) -> MethodResult:
        """Write T + β·τ; τ from `adapter` (a SafetyAdapter or its folder) or from `aligned` and `degraded`."""
        (target,) = self._need({"target": target}, "target")
        adapter = inputs.get("adapter")
        if isinstance(adapter, str | Path):
            adapter = SafetyAdapter.load(adapter)
        report: dict[str, Any] = {"rule": "T + beta * (A - D), all block linear modules"}
        beta = self.config.beta
        if self.config.tune:
            shots = self._need(inputs, "shots")[0]
            if adapter is None:
                from seawall.gene.extraction import extract

                aligned, degraded = self._need(inputs, "aligned", "degraded")
                adapter = extract(aligned, degraded, None, ExtractConfig(checksums=False), progress=False)
            from seawall.gene.modeling import load_tokenizer

            tokenizer = inputs.get("tokenizer") or load_tokenizer(target)
            beta, losses = self.tune_beta(adapter, target, tokenizer, shots)
            report["tuning"] = {"losses": {str(k): v for k, v in losses.items()}, "shots": shots.record()}
        report["beta"] = beta
        overwrite = bool(inputs.get("overwrite"))
        if adapter is not None:
            coefficients = {m: beta for m in adapter.modules if layer_index(m) is not None}
            out = apply_adapter(
                adapter, target, output, self.config.format, coefficients, overwrite=overwrite
            )
            return MethodResult(out, self.config.format, report)
        aligned, degraded = self._need(inputs, "aligned", "degraded")
        ckpt_a, ckpt_d = open_checkpoint(aligned), open_checkpoint(degraded)
        modules = [
            n.removesuffix(".weight")
            for n, s in ckpt_a.shapes().items()
            if n.endswith(".weight") and len(s) == 2 and layer_index(n) is not None
        ]

        def delta(module: str) -> torch.Tensor:
            name = f"{module}.weight"
            return ckpt_a.get(name).float() - ckpt_d.get(name).float()

        out = merge_deltas(target, output, delta, dict.fromkeys(modules, beta), overwrite=overwrite)
        return MethodResult(out, "merged", report)
