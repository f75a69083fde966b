"""Any OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, a hosted API) through httpx."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from seawall.generation.base import BACKENDS, GenerationError, Generator, Message, as_messages
from seawall.generation.config import GenerationConfig, StopFilter, truncate_at_stop


def iter_sse_data(lines: Iterator[str]) -> Iterator[str]:
    """Yield the `data:` payloads of a server-sent-event stream, up to `[DONE]`."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            return
        if data:
            yield data


def resolve_base_url(base_url: str | None) -> str:
    """`base_url`, else $OPENAI_BASE_URL (as the openai client reads it), without a trailing slash."""
    url = base_url or os.environ.get("OPENAI_BASE_URL")
    if not url:
        raise GenerationError(
            "the openai backend needs the endpoint's base URL (e.g. http://127.0.0.1:8000/v1): "
            "pass --base-url or set OPENAI_BASE_URL"
        )
    return url.rstrip("/")


def resolve_api_key(api_key_env: str | None = None) -> str | None:
    """The key in $`api_key_env` (which must be set), else $OPENAI_API_KEY if set; local servers need none."""
    if api_key_env is None:
        return os.environ.get("OPENAI_API_KEY") or None
    key = os.environ.get(api_key_env)
    if not key:
        raise GenerationError(
            f"environment variable {api_key_env} (the API key's, from --api-key-env) is not set or empty"
        )
    return key


@BACKENDS.register("openai")
class OpenAIGenerator(Generator):
    """Chat completions from an OpenAI-compatible server at `base_url` (e.g. http://127.0.0.1:8000/v1)."""

    backend = "openai"

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        config: GenerationConfig | None = None,
        timeout: float = 120.0,
        concurrency: int = 8,
        api_key_env: str | None = None,
    ) -> None:
        super().__init__(config)
        self.base_url = resolve_base_url(base_url)
        self.model = model
        self.concurrency = concurrency
        key = api_key if api_key is not None else resolve_api_key(api_key_env)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def describe(self) -> dict[str, Any]:
        """Backend, endpoint and model name."""
        return {"backend": self.backend, "base_url": self.base_url, "model": self.model}

    def _body(self, messages: list[Message], config: GenerationConfig, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            "stream": stream,
        }
        if config.stop:
            body["stop"] = list(config.stop)
        if config.seed is not None and not config.greedy:
            body["seed"] = config.seed
        return body

    def _fail(self, error: Exception) -> GenerationError:
        if isinstance(error, httpx.HTTPStatusError):
            text = error.response.text[:300] if not error.response.is_stream_consumed else ""
            return GenerationError(
                f"{self.base_url}/chat/completions answered HTTP {error.response.status_code}: {text}"
            )
        return GenerationError(
            f"cannot reach {self.base_url}/chat/completions: {type(error).__name__}: {error}"
        )

    def _one(self, messages: list[Message], config: GenerationConfig) -> str:
        try:
            response = self._client.post("/chat/completions", json=self._body(messages, config, stream=False))
            response.raise_for_status()
            content = response.json()["choices"][0]["message"]["content"] or ""
        except (httpx.HTTPError, KeyError, IndexError, ValueError) as error:
            raise self._fail(error) from error
        # Servers differ in whether they honour `stop`; cutting again is idempotent.
        return truncate_at_stop(content, config.stop)

    def generate(
        self, conversations: Sequence[str | Sequence[Message]], config: GenerationConfig | None = None
    ) -> list[str]:
        """Answer conversations with up to `concurrency` requests in flight."""
        config = config or self.config
        convs = [as_messages(c) for c in conversations]
        with ThreadPoolExecutor(max_workers=max(1, self.concurrency)) as pool:
            return list(pool.map(lambda m: self._one(m, config), convs))

    def stream(
        self, messages: str | Sequence[Message], config: GenerationConfig | None = None
    ) -> Iterator[str]:
        """Yield content deltas from the server's SSE stream."""
        config = config or self.config
        body = self._body(as_messages(messages), config, stream=True)
        stops = StopFilter(config.stop)
        try:
            with self._client.stream("POST", "/chat/completions", json=body) as response:
                if response.is_error:
                    response.read()
                    raise GenerationError(
                        f"{self.base_url}/chat/completions answered HTTP {response.status_code}: "
                        f"{response.text[:300]}"
                    )
                for data in iter_sse_data(response.iter_lines()):
                    choices = json.loads(data).get("choices") or [{}]
                    piece = (choices[0].get("delta") or {}).get("content") or ""
                    out = stops.feed(piece)
                    if out:
                        yield out
                    if stops.done:
                        return
        except (httpx.HTTPError, ValueError) as error:
            raise self._fail(error) from error
        tail = stops.flush()
        if tail:
            yield tail

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()
