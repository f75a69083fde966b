"""Generation backends chosen by name: `transformers` (local, default), `openai` (any compatible endpoint), `vllm`."""

from seawall.generation import openai_backend, transformers_backend, vllm_backend  # noqa: F401  (registration)
from seawall.generation.base import BACKENDS, GenerationError, Generator, Message, Messages, load_generator
from seawall.generation.config import GenerationConfig, StopFilter, truncate_at_stop

__all__ = [
    "BACKENDS",
    "GenerationConfig",
    "GenerationError",
    "Generator",
    "Message",
    "Messages",
    "StopFilter",
    "load_generator",
    "truncate_at_stop",
]
