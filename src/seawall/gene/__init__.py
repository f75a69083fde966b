"""SafeGene: reusable safety adapters (extract, select layers, calibrate per target, apply) and the baselines.

Python API::

    from seawall.gene import extract, select_layers, calibrate, apply, get_method, load_shots, ExtractConfig
    shots = load_shots()                                   # harmbench val + alpaca, recorded in the manifest
    adapter = extract("A/", "D/", "adapter/", ExtractConfig(form="lora", rank=16))
    select_layers(adapter, shots, aligned="A/", degraded="D/")
    calibrate(adapter, "T/", shots)
    apply(adapter, "T/", "T-restored/", format="merged")
    get_method("resta")({"beta": 0.5}).apply("T/", "out/", adapter="adapter/")

Names are imported lazily so that `seawall --help` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Manifest": "seawall.gene.adapter",
    "SafetyAdapter": "seawall.gene.adapter",
    "apply": "seawall.gene.export",
    "CalibrationResult": "seawall.gene.calibration",
    "calibrate": "seawall.gene.calibration",
    "ApplyConfig": "seawall.gene.config",
    "CalibrateConfig": "seawall.gene.config",
    "DistillConfig": "seawall.gene.config",
    "ExtractConfig": "seawall.gene.config",
    "Recipe": "seawall.gene.config",
    "SelectConfig": "seawall.gene.config",
    "ShotsConfig": "seawall.gene.config",
    "distill": "seawall.gene.extraction",
    "extract": "seawall.gene.extraction",
    "low_rank": "seawall.gene.extraction",
    "METHODS": "seawall.gene.methods.registry",
    "get_method": "seawall.gene.methods.registry",
    "run_recipe": "seawall.gene.pipeline",
    "select_layers": "seawall.gene.selection",
    "REFUSAL_TEMPLATES": "seawall.gene.shots",
    "Shots": "seawall.gene.shots",
    "load_shots": "seawall.gene.shots",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'seawall.gene' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
