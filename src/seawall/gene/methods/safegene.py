"""SafeGene (Wang et al. 2026, "Reusable Adapters for Transferable Safety Alignment").

The paper gives no formulas; the choices here are ours (docs/gene.md): τ = W_A − W_D per block linear module
(dense or truncated SVD, or distilled), layers selected by activation contrast and/or transfer sensitivity, then
T' = T + Σ_{l ∈ selected} α_l τ_l with α fitted per target on few shots (refusal CE + λ·KL(T ‖ T')), α ∈ [0, α_max].
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from seawall.gene.adapter import SafetyAdapter, module_coefficients
from seawall.gene.calibration import calibrate
from seawall.gene.config import CalibrateConfig, ExtractConfig, SelectConfig
from seawall.gene.export import apply as apply_adapter
from seawall.gene.methods.base import Method, MethodResult
from seawall.gene.methods.registry import METHODS
from seawall.gene.selection import pick_layers, score_layers, selection_record


class SafeGeneConfig(BaseModel):
    """SafeGene settings for one target (the adapter itself is extracted once per model family)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    extract: ExtractConfig = ExtractConfig()
    select: SelectConfig | None = Field(
        SelectConfig(),
        description="this run's layer selection (the adapter's recorded one is reused only when it was made with "
        "the same settings and shots); None keeps the adapter's recorded selection",
    )
    calibrate: CalibrateConfig | None = Field(
        CalibrateConfig(), description="None applies α = 1 on the selected layers"
    )
    format: str = Field("merged", description="'merged' HF folder or 'peft' adapter")


@METHODS.register("safegene")
class SafeGene(Method):
    """Select layers, calibrate α on the target, and apply — all for this run only.

    The selection and the coefficients are passed explicitly to `apply`; the adapter's manifest is never changed,
    so runs sharing one adapter (every target of an experiment) cannot leak a selection or an α into each other.
    """

    name = "safegene"
    config_class = SafeGeneConfig
    source = "Wang et al. 2026 (SafeGene)"

    def select(self, adapter: SafetyAdapter, inputs: dict[str, Any]) -> tuple[list[int] | None, dict | None]:
        """This run's layers and, when it scored them itself, the scores."""
        config = self.config.select
        recorded = adapter.manifest.selected_layers
        if config is None:
            return recorded, None
        (shots,) = self._need(inputs, "shots")
        if recorded is not None and adapter.manifest.selection == selection_record(config, shots):
            return recorded, None  # the recorded selection was made with these settings on these shots
        scores = score_layers(
            adapter,
            shots,
            aligned=inputs.get("aligned"),
            degraded=inputs.get("degraded"),
            model=inputs.get("degraded"),
            tokenizer=inputs.get("tokenizer"),
            config=config,
            progress=False,
        )
        return pick_layers(adapter, scores, config), scores

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
        layers, scores = self.select(adapter, inputs)
        run = adapter.manifest.model_copy(
            deep=True, update={"selected_layers": layers, "coefficients": {}, "calibration": {}}
        )
        if scores is not None:
            run.layer_scores = scores
            run.selection = selection_record(self.config.select, inputs["shots"])
        report: dict[str, Any] = {"selected_layers": layers}
        if scores is not None:
            report["layer_scores"] = scores
        if self.config.calibrate is not None:
            (shots,) = self._need(inputs, "shots")
            result = calibrate(
                adapter,
                target,
                shots,
                self.config.calibrate,
                tokenizer=inputs.get("tokenizer"),
                progress=False,
                aligned=inputs.get("aligned"),
                layers=layers,
                record=False,
            )
            run.coefficients, run.calibration = result.coefficients, result.record
            report["coefficients"] = result.coefficients
            report["calibration_seconds"] = result.seconds
            report["loss"] = {"initial": result.initial_loss, "final": result.final_loss}
            report["refusal_targets"] = result.record["refusal_targets"]
        coefficients = module_coefficients(
            adapter.modules,
            layers,
            run.coefficients or None,
            self.config.calibrate is not None and self.config.calibrate.per_module_type,
        )
        out = apply_adapter(
            adapter,
            target,
            output,
            self.config.format,
            coefficients=coefficients,
            overwrite=bool(inputs.get("overwrite")),
            progress=False,
            manifest=run,
        )
        return MethodResult(out, self.config.format, report)
