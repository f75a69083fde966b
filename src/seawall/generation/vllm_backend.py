"""vLLM offline inference (GPU users); available only when the `vllm` package is installed."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from seawall.generation.base import BACKENDS, GenerationError, Generator, Message, as_messages
from seawall.generation.config import GenerationConfig, truncate_at_stop
from seawall.generation.transformers_backend import DEFAULT_MODEL, resolve_model_dir


@BACKENDS.register("vllm")
class VLLMGenerator(Generator):
    """Batched generation with `vllm.LLM.chat`."""

    backend = "vllm"

    def __init__(self, model: str = DEFAULT_MODEL, config: GenerationConfig | None = None, **llm_kwargs: Any):
        super().__init__(config)
        try:
            import vllm
        except ImportError as error:
            raise GenerationError(
                "the vllm backend needs the `vllm` package (pip install vllm; it wants a GPU). "
                "On CPU use --backend transformers, or run a vLLM server and use --backend openai."
            ) from error
        self._vllm = vllm
        self.model_ref = model
        self.llm = vllm.LLM(model=str(resolve_model_dir(model)), **llm_kwargs)

    def describe(self) -> dict[str, Any]:
        """Backend and model reference."""
        return {"backend": self.backend, "model": self.model_ref}

    def _params(self, config: GenerationConfig) -> Any:
        return self._vllm.SamplingParams(
            max_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            stop=list(config.stop) or None,
            seed=config.seed,
        )

    def generate(
        self, conversations: Sequence[str | Sequence[Message]], config: GenerationConfig | None = None
    ) -> list[str]:
        """Answer all conversations in one vLLM batch."""
        config = config or self.config
        outputs = self.llm.chat([as_messages(c) for c in conversations], self._params(config), use_tqdm=False)
        return [truncate_at_stop(o.outputs[0].text, config.stop) for o in outputs]

    def stream(
        self, messages: str | Sequence[Message], config: GenerationConfig | None = None
    ) -> Iterator[str]:
        """Offline vLLM has no token stream: yields the whole answer once (use a vLLM server for streaming)."""
        yield self.generate([messages], config)[0]
