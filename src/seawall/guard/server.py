"""The OpenAI-compatible guard proxy: FastAPI app with auth, limits, streaming checks, audit log and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seawall.errors import SeawallError
from seawall.guard.audit import AuditLog
from seawall.guard.config import ServerConfig
from seawall.guard.guard import Guard, Verdict
from seawall.guard.metrics import Metrics
from seawall.guard.stream import StreamGuard
from seawall.guard.upstream import HTTPUpstream, LocalUpstream, UpstreamError, _text

log = logging.getLogger("seawall.guard")

ENDPOINTS = {"/v1/chat/completions", "/v1/completions", "/v1/classify", "/healthz", "/metrics"}


class ChatMessage(BaseModel):
    """One chat turn (extra OpenAI fields are passed through)."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(BaseModel):
    """The fields the guard reads from a chat completion request."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=1, description="The guard checks a single choice per request.")


class CompletionRequest(BaseModel):
    """The fields the guard reads from a text completion request."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=1, description="The guard checks a single choice per request.")


class ClassifyPair(BaseModel):
    """A (prompt, response) pair to score."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = ""
    response: str


class ClassifyRequest(BaseModel):
    """A batch of pairs for /v1/classify."""

    model_config = ConfigDict(extra="forbid")
    pairs: list[ClassifyPair] = Field(min_length=1, max_length=1024)


class HTTPError(Exception):
    """An error answered as OpenAI-style JSON: {"error": {"message", "type", "param"}}."""

    def __init__(
        self, status: int, message: str, kind: str = "invalid_request_error", param: str | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param

    def response(self, headers: dict[str, str] | None = None) -> JSONResponse:
        body = {
            "error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.status}
        }
        return JSONResponse(body, status_code=self.status, headers=headers)


def load_api_keys(config: ServerConfig) -> list[bytes]:
    """Accepted bearer keys from the key file (one per line, # comments) and/or the env var (comma-separated)."""
    keys: list[str] = []
    if config.api_keys_file:
        path = Path(config.api_keys_file)
        if not path.is_file():
            raise SeawallError(f"api_keys_file {path} does not exist")
        keys += [
            line.strip()
            for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")
        ]
    if config.api_keys_env:
        value = os.environ.get(config.api_keys_env)
        if value is None:
            raise SeawallError(f"api_keys_env: environment variable {config.api_keys_env} is not set")
        keys += [k.strip() for k in value.split(",") if k.strip()]
    if (config.api_keys_file or config.api_keys_env) and not keys:
        raise SeawallError(
            "API keys are configured but none was found; refusing to run an open proxy by mistake"
        )
    return [k.encode() for k in keys]


def _field_error(error: ValidationError) -> HTTPError:
    first = error.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "body"
    return HTTPError(400, f"invalid request: {field}: {first['msg']}", param=field)


def _prompt_of(path: str, body: dict[str, Any]) -> str:
    """The text the detector pairs with the response: the last user turn (or the completion prompt)."""
    if path == "/completions":
        return str(body["prompt"])
    users = [m for m in body["messages"] if m.get("role") == "user"]
    return _text((users or body["messages"])[-1].get("content"))


def _choice_text(path: str, choice: dict[str, Any], delta: bool) -> str:
    if path == "/completions":
        return choice.get("text") or ""
    return ((choice.get("delta") if delta else choice.get("message")) or {}).get("content") or ""


def _sse(obj: Any) -> bytes:
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n".encode()


class CountRequests:
    """Pure ASGI middleware counting requests by endpoint and status (BaseHTTPMiddleware costs a task per request)."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            path = scope["path"] if scope["path"] in ENDPOINTS else "other"
            self.metrics.inc("seawall_requests_total", path, str(status))


class GuardApp:
    """State shared by the handlers: config, guard, upstream, audit log, metrics, keys, in-flight count."""

    def __init__(self, config: ServerConfig, guard: Guard, upstream: Any, audit: AuditLog, keys: list[bytes]):
        self.config, self.guard, self.upstream, self.audit, self.keys = config, guard, upstream, audit, keys
        self.metrics = Metrics()
        self.in_flight = 0

    def authorize(self, request: Request) -> None:
        if not self.keys:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        presented = token.strip().encode() if scheme.lower() == "bearer" else b""
        # Compare against every key (no early exit) so timing does not reveal which key matched or how much.
        ok = False
        for key in self.keys:
            ok |= hmac.compare_digest(presented, key)
        if not ok:
            raise HTTPError(
                401, "missing or invalid API key (Authorization: Bearer <key>)", "authentication_error"
            )

    async def read_json(self, request: Request) -> Any:
        limit = self.config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise HTTPError(413, f"request body of {declared} bytes exceeds the limit of {limit} bytes")
        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > limit:
                raise HTTPError(413, f"request body exceeds the limit of {limit} bytes")
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as error:
            raise HTTPError(400, f"invalid JSON body: {error}", param="body") from error

    def _count(self, verdict: Verdict) -> None:
        self.metrics.inc("seawall_verdicts_total", verdict.action, verdict.category or "none")
        self.metrics.observe_detector(verdict.latency_ms / 1000)
        if verdict.error:
            self.metrics.inc("seawall_detector_failures_total")

    async def record(
        self, rid: str, verdict: Verdict, prompt: str, response: str, endpoint: str, model: Any, stream: bool
    ) -> None:
        """Count the decision and wait until the audit log has committed it."""
        self._count(verdict)
        await self.audit.arecord(
            rid, verdict, prompt, response, endpoint, str(model) if model else None, stream
        )

    def record_nowait(
        self, rid: str, verdict: Verdict, prompt: str, response: str, endpoint: str, model: Any, stream: bool
    ) -> None:
        """Count the decision and queue it for the audit log (for a cancelled request that cannot wait)."""
        self._count(verdict)
        self.audit.submit(rid, verdict, prompt, response, endpoint, str(model) if model else None, stream)

    def upstream_failed(self, error: UpstreamError) -> HTTPError:
        self.metrics.inc("seawall_upstream_errors_total", error.kind)
        log.warning("upstream failure: %s", error.message)
        return HTTPError(error.status, error.message, "upstream_error")


def create_app(
    config: ServerConfig, guard: Guard, upstream: Any, audit: AuditLog, keys: list[bytes]
) -> FastAPI:
    """The proxy app around ready-made parts (see `build_app` to make them from a config)."""
    state = GuardApp(config, guard, upstream, audit, keys)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await upstream.aclose()
        audit.close()  # writes every queued decision before the process exits

    app = FastAPI(title="seawall guard", version="1", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.guard_app = state
    app.add_middleware(CountRequests, metrics=state.metrics)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        """Liveness plus what the proxy is running."""
        return {
            "status": "ok",
            "detector_id": guard.detector_id,
            "detector_version": guard.detector_version,
            "in_flight": state.in_flight,
        }

    @app.get("/metrics")
    async def metrics(request: Request) -> Response:
        """Prometheus text format (behind the API keys when `protect_metrics` is set)."""
        if config.protect_metrics:
            try:
                state.authorize(request)
            except HTTPError as error:
                return error.response()
        return PlainTextResponse(state.metrics.render(), media_type="text/plain; version=0.0.4")

    async def guarded(request: Request, path: str, schema: type[BaseModel]) -> Response:
        rid = f"req-{uuid.uuid4().hex}"
        headers = {"x-request-id": rid}
        try:
            state.authorize(request)
            body = await state.read_json(request)
            if not isinstance(body, dict):
                raise HTTPError(400, "invalid request: body: must be a JSON object", param="body")
            try:
                parsed = schema.model_validate(body)
            except ValidationError as error:
                raise _field_error(error) from None
            if parsed.max_tokens is not None and parsed.max_tokens > config.max_tokens:
                raise HTTPError(
                    400,
                    f"invalid request: max_tokens: {parsed.max_tokens} exceeds the limit {config.max_tokens}",
                    param="max_tokens",
                )
            body.setdefault("max_tokens", config.max_tokens)
            if body.get("max_tokens") is None:
                body["max_tokens"] = config.max_tokens
            if state.in_flight >= config.max_concurrency:
                raise HTTPError(
                    429, f"too many requests in flight (limit {config.max_concurrency})", "rate_limit"
                )
        except HTTPError as error:
            extra = {"Retry-After": "1"} if error.status == 429 else {}
            return error.response({**headers, **extra})
        state.in_flight += 1
        released = False
        try:
            if parsed.stream:
                response = await stream_response(rid, path, body, headers)
                released = True  # the stream releases the slot when it ends
                return response
            return await plain_response(rid, path, body, headers)
        except HTTPError as error:
            return error.response(headers)
        finally:
            if not released:
                state.in_flight -= 1

    async def plain_response(rid: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> Response:
        try:
            # asyncio.timeout, not wait_for: no extra task per request.
            async with asyncio.timeout(config.request_timeout_s):
                upstream_json = await upstream.complete(path, body)
        except TimeoutError:
            raise state.upstream_failed(UpstreamError(504, "timeout", "upstream timed out")) from None
        except UpstreamError as error:
            raise state.upstream_failed(error) from None
        try:
            choice = upstream_json["choices"][0]
        except (KeyError, IndexError, TypeError):
            raise state.upstream_failed(
                UpstreamError(502, "invalid", "upstream answer has no choices")
            ) from None
        prompt, text = _prompt_of(path, body), _choice_text(path, choice, delta=False)
        verdict = await guard.acheck(prompt, text)
        await state.record(rid, verdict, prompt, text, path, body.get("model"), stream=False)
        headers = {**headers, "x-seawall-action": verdict.action}
        if verdict.action == "block":
            choice["finish_reason"] = "content_filter"
            if path == "/completions":
                choice["text"] = guard.policy.refusal
            else:
                choice["message"] = {"role": "assistant", "content": guard.policy.refusal}
        if verdict.action in ("block", "flag"):
            upstream_json["seawall"] = {"request_id": rid, **verdict.to_dict()}
        return JSONResponse(upstream_json, headers=headers)

    async def stream_response(rid: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> Response:
        try:
            async with asyncio.timeout(config.request_timeout_s):
                chunks = await upstream.open_stream(path, body)
        except TimeoutError:
            raise state.upstream_failed(UpstreamError(504, "timeout", "upstream timed out")) from None
        except UpstreamError as error:
            raise state.upstream_failed(error) from None
        prompt = _prompt_of(path, body)
        sg = StreamGuard(guard, prompt)

        async def events() -> AsyncIterator[bytes]:
            envelope: dict[str, Any] = {}
            finish = "stop"
            recorded = False

            async def record(verdict: Verdict) -> None:
                nonlocal recorded
                recorded = True
                await state.record(rid, verdict, prompt, sg.text, path, body.get("model"), stream=True)

            def chunk(text: str | None, finish_reason: str | None, extra: dict | None = None) -> bytes:
                if path == "/completions":
                    choice = {"index": 0, "text": text or "", "finish_reason": finish_reason}
                else:
                    choice = {
                        "index": 0,
                        "delta": {"content": text} if text else {},
                        "finish_reason": finish_reason,
                    }
                return _sse({**envelope, "choices": [choice], **(extra or {})})

            try:
                try:
                    async for item in chunks:
                        if not envelope:
                            envelope = {k: item[k] for k in ("id", "object", "created", "model") if k in item}
                        choices = item.get("choices") or []
                        if not choices:
                            continue
                        finish = choices[0].get("finish_reason") or finish
                        out = await sg.afeed(_choice_text(path, choices[0], delta=True))
                        if out:
                            yield chunk(out, "content_filter" if sg.blocked else None)
                        if sg.blocked:
                            break
                except UpstreamError as error:
                    # Part of the response may already be with the client: this is a decision, so audit it.
                    failure = state.upstream_failed(error)
                    await record(sg.interrupted("upstream_error", failure.message))
                    yield _sse(
                        {"error": {"message": failure.message, "type": failure.kind, "code": failure.status}}
                    )
                    yield b"data: [DONE]\n\n"
                    return
                if not sg.blocked:
                    out = await sg.afinish()
                    if out:
                        yield chunk(out, None if not sg.blocked else "content_filter")
                verdict = sg.verdict
                assert verdict is not None
                await record(verdict)
                extra = (
                    {"seawall": {"request_id": rid, **verdict.to_dict()}} if verdict.action != "allow" else {}
                )
                yield chunk(None, "content_filter" if sg.blocked else finish, extra)
                yield b"data: [DONE]\n\n"
            finally:
                state.in_flight -= 1
                if not recorded:
                    # The client went away (the task is being cancelled): queue the decision without waiting.
                    verdict = sg.interrupted(
                        "client_disconnect", "client disconnected before the end of the stream"
                    )
                    state.record_nowait(rid, verdict, prompt, sg.text, path, body.get("model"), stream=True)
                # Shielded: on a client disconnect the task is being cancelled, and the upstream must still close.
                with anyio.CancelScope(shield=True):
                    await chunks.aclose()

        return StreamingResponse(
            events(), media_type="text/event-stream", headers={**headers, "cache-control": "no-cache"}
        )

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        """OpenAI chat completions, checked by the guard (stream true/false)."""
        return await guarded(request, "/chat/completions", ChatRequest)

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        """OpenAI text completions, checked by the guard (stream true/false)."""
        return await guarded(request, "/completions", CompletionRequest)

    @app.post("/v1/classify")
    async def classify(request: Request) -> Response:
        """Score a batch of (prompt, response) pairs; every verdict is audited."""
        rid = f"req-{uuid.uuid4().hex}"
        try:
            state.authorize(request)
            raw = await state.read_json(request)
            try:
                parsed = ClassifyRequest.model_validate(raw)
            except ValidationError as error:
                raise _field_error(error) from None
        except HTTPError as error:
            return error.response({"x-request-id": rid})
        verdicts = await guard.acheck_batch([(p.prompt, p.response) for p in parsed.pairs])
        await asyncio.gather(
            *(
                state.record(
                    f"{rid}:{i}", verdict, pair.prompt, pair.response, "/classify", None, stream=False
                )
                for i, (pair, verdict) in enumerate(zip(parsed.pairs, verdicts, strict=True))
            )
        )
        return JSONResponse(
            {"request_id": rid, "results": [v.to_dict() for v in verdicts]}, headers={"x-request-id": rid}
        )

    return app


def build_app(config: ServerConfig) -> FastAPI:
    """Make the detector, guard, upstream, audit log and keys from `config`, then the app."""
    from seawall.guard.detectors import resolve_detector

    guard = Guard(resolve_detector(config.detector), config.policy)
    if config.upstream_url:
        key = os.environ.get(config.upstream_api_key_env) if config.upstream_api_key_env else None
        upstream: Any = HTTPUpstream(config.upstream_url, config.request_timeout_s, key)
    else:
        from seawall.generation import load_generator
        from seawall.generation.transformers_backend import DEFAULT_MODEL

        model = config.local_model or DEFAULT_MODEL
        upstream = LocalUpstream(load_generator("transformers", model=model), model, config.max_tokens)
    audit = AuditLog(config.audit_db, config.audit_store_text, config.audit_synchronous)
    return create_app(config, guard, upstream, audit, load_api_keys(config))
