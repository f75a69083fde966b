"""SafeGene: reusable safety adapters (extract, select layers, calibrate per target, apply) and the baselines.

Python API::

    from seawall.gene import extract, select_layers, calibrate, apply, get_method, SafetyAdapter, load_shots
    adapter = extract("A/", "D/", "adapter/", ExtractConfig(form="lora", rank=16))
    select_layers(adapter, shots, aligned="A/", degraded="D/")
    calibrate(adapter, "T/", shots)
    apply(adapter, "T/", "T-restored/", format="merged")
    get_method("resta")({"beta": 0.5}).apply("T/", "out/", adapter="adapter/")
"""

from seawall.gene.adapter import Manifest, SafetyAdapter
from seawall.gene.apply import apply
from seawall.gene.calibrate import CalibrationResult, calibrate
from seawall.gene.config import (
    ApplyConfig,
    CalibrateConfig,
    DistillConfig,
    ExtractConfig,
    Recipe,
    SelectConfig,
    ShotsConfig,
)
from seawall.gene.extract import distill, extract, low_rank
from seawall.gene.methods.registry import METHODS, get_method
from seawall.gene.select import select_layers
from seawall.gene.shots import REFUSAL_TEMPLATES, Shots, load_shots

__all__ = [
    "METHODS",
    "REFUSAL_TEMPLATES",
    "ApplyConfig",
    "CalibrateConfig",
    "CalibrationResult",
    "DistillConfig",
    "ExtractConfig",
    "Manifest",
    "Recipe",
    "SafetyAdapter",
    "SelectConfig",
    "Shots",
    "ShotsConfig",
    "apply",
    "calibrate",
    "distill",
    "extract",
    "get_method",
    "load_shots",
    "low_rank",
    "select_layers",
]
