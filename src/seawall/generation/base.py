"""The generator interface and the backend registry (lm-evaluation-harness style: backends chosen by name)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from seawall.errors import SeawallError
from seawall.generation.config import GenerationConfig
from seawall.registry import Registry

Message = dict[str, str]
Messages = list[Message]

BACKENDS: Registry[type[Generator]] = Registry("generation backend")


class GenerationError(SeawallError):
    """A backend could not produce text (model missing, endpoint down, bad response)."""


def as_messages(prompt: str | Sequence[Message]) -> Messages:
    """Accept a plain user prompt or a chat message list; validate roles and contents."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    messages = [dict(m) for m in prompt]
    for i, m in enumerate(messages):
        if not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise GenerationError(f"message {i} needs string 'role' and 'content' fields, got {m!r}")
    return messages


class Generator:
    """A chat model: `generate` answers a batch of conversations, `stream` yields one answer in pieces."""

    backend: str = ""

    def __init__(self, config: GenerationConfig | None = None) -> None:
        self.config = config or GenerationConfig()

    def generate(
        self, conversations: Sequence[str | Sequence[Message]], config: GenerationConfig | None = None
    ) -> list[str]:
        """Answer each conversation; returns one string per input, in order."""
        raise NotImplementedError

    def stream(
        self, messages: str | Sequence[Message], config: GenerationConfig | None = None
    ) -> Iterator[str]:
        """Yield the answer to one conversation as text chunks."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What identifies this generator's outputs (backend, model), e.g. for a generation cache key."""
        return {"backend": self.backend}


def load_generator(name: str, **kwargs: Any) -> Generator:
    """Build the backend registered as `name` (`transformers`, `openai`, `vllm`) with its keyword arguments."""
    return BACKENDS.get(name)(**kwargs)
