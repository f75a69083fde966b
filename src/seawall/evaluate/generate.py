"""Build the generate(conversations) → replies function the harness uses, through the generation backends."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from seawall.evaluate.harness import Decoding, Messages


def backend_generator(
    model: str | Path, decoding: Decoding, threads: int = 2, backend: str = "transformers", **options: object
) -> Callable[[list[Messages], Decoding], list[str]]:
    """A `seawall.generation` backend (transformers by default; openai, vllm) with the harness's decoding settings."""
    from seawall.generation import GenerationConfig, load_generator

    config = GenerationConfig(max_new_tokens=decoding.max_new_tokens, temperature=decoding.temperature)
    kwargs: dict[str, object] = {"model": str(model), "config": config, **options}
    if backend == "transformers":
        kwargs.update(batch_size=decoding.batch_size, threads=threads)
    generator = load_generator(backend, **kwargs)

    def generate(conversations: list[Messages], settings: Decoding) -> list[str]:
        return generator.generate(
            conversations,
            GenerationConfig(max_new_tokens=settings.max_new_tokens, temperature=settings.temperature),
        )

    return generate
