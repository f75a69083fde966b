"""SafeGene (Wang et al. 2026, "Reusable Adapters for Transferable Safety Alignment").

The paper gives no formulas; the choices here are ours (docs/gene.md): τ = W_A − W_D per block linear module
(dense or truncated SVD, or distilled), layers selected by activation contrast and/or transfer sensitivity, then
T' = T + Σ_{l ∈ selected} α_l τ_l with α fitted per target on few shots (refusal CE + λ·KL(T ‖ T')), α ∈ [0, α_max].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from seawall.gene.adapter import SafetyAdapter
from seawall.gene.calibration import calibrate
from seawall.gene.config import CalibrateConfig, ExtractConfig, SelectConfig
from seawall.gene.export import apply as apply_adapter
from seawall.gene.methods.base import Method, MethodResult
from seawall.gene.methods.registry import METHODS


class SafeGeneConfig(BaseModel):
    """SafeGene settings for one target (the adapter itself is extracted once per model family)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    extract: ExtractConfig = ExtractConfig()
    select: SelectConfig | None = Field(
        SelectConfig(), description="None keeps the adapter's recorded selection"
    )
    calibrate: CalibrateConfig | None = Field(
        CalibrateConfig(), description="None applies α = 1 on selected layers"
    )
    format: str = Field("merged", description="'merged' HF folder or 'peft' adapter")


@METHODS.register("safegene")
class SafeGene(Method):
    """Select layers (if not yet done), calibrate α on the target, and apply."""

    name = "safegene"
    config_class = SafeGeneConfig
    source = "Wang et al. 2026 (SafeGene)"

    def apply(self, target: str | Path | None, output: str | Path, **inputs: Any) -> MethodResult:
        """Write the restored target; inputs: adapter (or aligned + degraded), shots, optional tokenizer."""
        (target,) = self._need({"target": target}, "target")
        adapter = inputs.get("adapter")
        if isinstance(adapter, str | Path):
            adapter = SafetyAdapter.load(adapter)
        if adapter is None:
            from seawall.gene.extraction import extract

            aligned, degraded = self._need(inputs, "aligned", "degraded")
            adapter = extract(
                aligned, degraded, None, self.config.extract, shots=inputs.get("shots"), progress=False
            )
        shots = inputs.get("shots")
        report: dict[str, Any] = {}
        if self.config.select is not None and adapter.manifest.selected_layers is None:
            from seawall.gene.selection import select_layers

            (shots,) = self._need(inputs, "shots")
            select_layers(
                adapter,
                shots,
                aligned=inputs.get("aligned"),
                degraded=inputs.get("degraded"),
                model=inputs.get("degraded"),
                tokenizer=inputs.get("tokenizer"),
                config=self.config.select,
                progress=False,
            )
        report["selected_layers"] = adapter.manifest.selected_layers
        if self.config.calibrate is not None:
            (shots,) = self._need(inputs, "shots")
            result = calibrate(
                adapter,
                target,
                shots,
                self.config.calibrate,
                tokenizer=inputs.get("tokenizer"),
                aligned=inputs.get("aligned"),
            )
            report["coefficients"] = result.coefficients
            report["calibration_seconds"] = result.seconds
            report["loss"] = {"initial": result.initial_loss, "final": result.final_loss}
            report["refusal_targets"] = adapter.manifest.calibration.get("refusal_targets")
        out = apply_adapter(
            adapter, target, output, self.config.format, overwrite=bool(inputs.get("overwrite"))
        )
        return MethodResult(out, self.config.format, report)
