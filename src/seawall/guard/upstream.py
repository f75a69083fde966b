"""Where the proxy gets its text: an OpenAI-compatible URL (httpx) or an in-process generator."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx

from seawall.generation.base import Generator
from seawall.generation.config import GenerationConfig


class UpstreamError(Exception):
    """The upstream failed: `status` is what the proxy answers (502 unreachable/bad answer, 504 timeout)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


class HTTPUpstream:
    """Forwards request bodies to `{base_url}/chat/completions` or `/completions` unchanged."""

    def __init__(self, base_url: str, timeout_s: float = 60.0, api_key: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        self._client = httpx.AsyncClient(headers=headers, timeout=timeout_s, limits=limits)
        # Absolute URLs parsed once: httpx re-parses and merges a relative URL against base_url on every request.
        self._urls = {p: httpx.URL(self.base_url + p) for p in ("/chat/completions", "/completions")}

    def _url(self, path: str) -> httpx.URL:
        return self._urls.get(path) or httpx.URL(self.base_url + path)

    def _error(self, path: str, error: Exception) -> UpstreamError:
        if isinstance(error, httpx.TimeoutException):
            return UpstreamError(
                504, "timeout", f"upstream {self.base_url}{path} timed out ({type(error).__name__})"
            )
        return UpstreamError(502, "unreachable", f"upstream {self.base_url}{path} unreachable: {error!r}")

    async def complete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST a non-streaming request; returns the upstream JSON."""
        try:
            response = await self._client.post(self._url(path), json=body)
        except httpx.HTTPError as error:
            raise self._error(path, error) from error
        if response.is_error:
            raise UpstreamError(
                502,
                "status",
                f"upstream {self.base_url}{path} answered HTTP {response.status_code}: {response.text[:300]}",
            )
        try:
            return response.json()
        except ValueError as error:
            raise UpstreamError(
                502, "invalid", f"upstream {self.base_url}{path} sent invalid JSON"
            ) from error

    async def open_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Start a streaming request (errors before the first byte raise here); returns the chunk iterator."""
        request = self._client.build_request("POST", self._url(path), json=body)
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as error:
            raise self._error(path, error) from error
        if response.is_error:
            await response.aread()
            await response.aclose()
            raise UpstreamError(
                502,
                "status",
                f"upstream {self.base_url}{path} answered HTTP {response.status_code}: {response.text[:300]}",
            )

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            try:
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    if data:
                        try:
                            item = json.loads(data)
                        except ValueError:
                            raise UpstreamError(
                                502, "invalid", f"upstream {self.base_url}{path} sent an invalid stream chunk"
                            ) from None
                        yield item
            except httpx.HTTPError as error:
                raise self._error(path, error) from error
            finally:
                await response.aclose()

        return chunks()

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._client.aclose()


def _config_from(body: dict[str, Any], default_max: int) -> GenerationConfig:
    stop = body.get("stop") or ()
    return GenerationConfig(
        max_new_tokens=int(body.get("max_tokens") or default_max),
        temperature=float(body.get("temperature") or 0.0),
        top_p=float(body.get("top_p") or 1.0),
        stop=(stop,) if isinstance(stop, str) else tuple(stop),
        seed=body.get("seed", 0),
    )


class LocalUpstream:
    """Serves the OpenAI schema from an in-process `Generator` (e.g. the transformers backend)."""

    def __init__(self, generator: Generator, model_name: str = "local", max_tokens: int = 256) -> None:
        self.generator = generator
        self.model_name = model_name
        self.max_tokens = max_tokens

    @staticmethod
    def _messages(path: str, body: dict[str, Any]) -> list[dict[str, str]]:
        if path == "/completions":
            # The local backend is a chat model: a plain completion prompt is sent as one user turn.
            return [{"role": "user", "content": str(body["prompt"])}]
        return [{"role": m["role"], "content": message_text(m.get("content"))} for m in body["messages"]]

    def _envelope(self, path: str, chunk: bool) -> dict[str, Any]:
        kind = "text_completion" if path == "/completions" else "chat.completion"
        return {
            "id": f"local-{uuid.uuid4().hex[:16]}",
            "object": kind + (".chunk" if chunk and kind == "chat.completion" else ""),
            "created": int(time.time()),
            "model": self.model_name,
        }

    async def complete(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """Generate in a worker thread; returns an OpenAI-shaped response."""
        config = _config_from(body, self.max_tokens)
        text = (await asyncio.to_thread(self.generator.generate, [self._messages(path, body)], config))[0]
        choice: dict[str, Any] = {"index": 0, "finish_reason": "stop"}
        if path == "/completions":
            choice["text"] = text
        else:
            choice["message"] = {"role": "assistant", "content": text}
        return {**self._envelope(path, chunk=False), "choices": [choice]}

    async def open_stream(self, path: str, body: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """Stream from the generator on a thread, bridged to asyncio through a queue."""
        config = _config_from(body, self.max_tokens)
        messages = self._messages(path, body)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        stop = threading.Event()
        envelope = self._envelope(path, chunk=True)

        def produce() -> None:
            pieces = self.generator.stream(messages, config)
            try:
                for piece in pieces:
                    loop.call_soon_threadsafe(queue.put_nowait, ("text", piece))
                    if stop.is_set():
                        break
                loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
            except Exception as error:
                loop.call_soon_threadsafe(queue.put_nowait, ("error", error))
            finally:
                close = getattr(pieces, "close", None)
                if close:
                    close()

        threading.Thread(target=produce, daemon=True).start()

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            try:
                while True:
                    kind, value = await queue.get()
                    if kind == "error":
                        raise UpstreamError(502, "local", f"local model failed: {value}")
                    if kind == "end":
                        return
                    delta = {"text": value} if path == "/completions" else {"delta": {"content": value}}
                    yield {**envelope, "choices": [{"index": 0, "finish_reason": None, **delta}]}
            finally:
                stop.set()

        return chunks()

    async def aclose(self) -> None:
        """Nothing to release."""


def message_text(content: Any) -> str:
    """Text of an OpenAI message content: a string, or a list of parts whose text parts are joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text")
        return "".join(t for t in texts if isinstance(t, str))
    return ""
