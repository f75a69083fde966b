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
from seawall.guard.audit import AuditLog, open_audit_log
from seawall.guard.config import ServerConfig, is_loopback
from seawall.guard.guard import Guard, Verdict, most_severe
from seawall.guard.metrics import Metrics
from seawall.guard.moderation import InputError, ModerationRequest, input_texts, moderation_result
from seawall.guard.response import (
    COMPLETIONS,
    ChunkFields,
    Dropped,
    InvalidAnswer,
    checked_texts,
    chunk_choices,
    envelope_of,
    finish_reason_of,
    joined,
    read_answer,
    usage_of,
)
from seawall.guard.stream import FieldStreamGuard
from seawall.guard.upstream import HTTPUpstream, LocalUpstream, UpstreamError, message_text

log = logging.getLogger("seawall.guard")

ENDPOINTS = {
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/classify",
    "/v1/moderations",
    "/healthz",
    "/metrics",
}


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
    max_completion_tokens: int | None = Field(None, ge=1, description="Limited like max_tokens.")
    n: int = Field(1, ge=1, le=1, description="The guard checks a single choice per request.")


class CompletionRequest(BaseModel):
    """The fields the guard reads from a text completion request."""

    model_config = ConfigDict(extra="allow")
    model: str | None = None
    prompt: str
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1, description="Limited like max_tokens.")
    n: int = Field(1, ge=1, le=1, description="The guard checks a single choice per request.")


class ClassifyPair(BaseModel):
    """A (prompt, response) pair to score."""

    model_config = ConfigDict(extra="forbid")
    prompt: str = ""
    response: str


class ClassifyRequest(BaseModel):
    """A batch of pairs for /v1/classify."""

    model_config = ConfigDict(extra="forbid")
    pairs: list[ClassifyPair] = Field(min_length=1, description="At most `classify_max_pairs` (config).")


def openapi_body(model: type[BaseModel], maxima: dict[str, int] | None = None) -> dict[str, Any]:
    """An OpenAPI request body for `model` (the handlers read the raw body themselves, so FastAPI cannot).

    `maxima` adds the configured upper bounds of integer fields (e.g. max_tokens) to the published schema.
    """
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    for name, maximum in (maxima or {}).items():
        for option in schema["properties"][name].get("anyOf", [schema["properties"][name]]):
            if option.get("type") == "integer":
                option["maximum"] = maximum

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(definitions[node["$ref"].rsplit("/", 1)[1]])
            return {key: inline(value) for key, value in node.items()}
        if isinstance(node, list):
            return [inline(value) for value in node]
        return node

    body = {"required": True, "content": {"application/json": {"schema": inline(schema)}}}
    return {"requestBody": body}


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
        lines = (line.strip() for line in path.read_text().splitlines())
        keys += [line for line in lines if line and not line.startswith("#")]
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
    if path == COMPLETIONS:
        return str(body["prompt"])
    users = [m for m in body["messages"] if m.get("role") == "user"]
    return message_text((users or body["messages"])[-1].get("content"))


def _limit_lengths(parsed: ChatRequest | CompletionRequest, body: dict[str, Any], limit: int) -> None:
    """Reject a length over the limit; forward the validated values, and max_tokens always.

    max_completion_tokens is also sent as max_tokens: an upstream that reads only max_tokens must not generate
    without a bound when the client used the newer name.
    """
    for name in ("max_tokens", "max_completion_tokens"):
        value = getattr(parsed, name)
        if value is not None and value > limit:
            raise HTTPError(400, f"invalid request: {name}: {value} exceeds the limit {limit}", param=name)
    body["max_tokens"] = parsed.max_tokens or parsed.max_completion_tokens or limit
    if parsed.max_completion_tokens is not None:
        body["max_completion_tokens"] = parsed.max_completion_tokens
    # The upstream gets the values the proxy validated ("stream": "yes" passed validation as true).
    body["stream"] = parsed.stream
    if "n" in body:
        body["n"] = parsed.n


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
    """State shared by the handlers: config, guards, upstream, audit log, metrics, keys, in-flight count."""

    def __init__(self, config: ServerConfig, guard: Guard, upstream: Any, audit: AuditLog, keys: list[bytes]):
        self.config, self.upstream, self.audit, self.keys = config, upstream, audit, keys
        self.metrics = Metrics()
        # Concurrent checks (streamed windows included) share detector calls, max_inflight_batches at a time;
        # every call's size is a metric, and so is every hung call that gave up its slot.
        self.guard = guard.with_batching(
            config.batch_wait_ms,
            config.max_batch,
            self.metrics.observe_detector_batch,
            max_inflight=config.max_inflight_batches,
            on_abandoned=lambda: self.metrics.inc("seawall_detector_batches_abandoned_total"),
        )
        # /v1/classify runs on its own detector threads (and batcher): its batches (and its hung calls) cannot
        # starve the checks of proxied answers.
        self.classify_guard = self.guard.with_own_threads(config.classify_workers, "seawall-classify")
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

    def admit(self) -> None:
        """Take an in-flight slot (the caller gives it back), or 429 when all are taken."""
        if self.in_flight >= self.config.max_concurrency:
            raise HTTPError(
                429, f"too many requests in flight (limit {self.config.max_concurrency})", "rate_limit"
            )
        self.in_flight += 1

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

    def count_dropped(self, dropped: Dropped) -> None:
        """Count the fields left out of one answer, by family (bounded labels; the answer names each field)."""
        for name in dropped:
            self.metrics.inc("seawall_dropped_fields_total", dropped.family(name))

    def audit_failed(self, rid: str, error: BaseException) -> None:
        """A decision the audit log could not write: never silent."""
        self.metrics.inc("seawall_audit_failures_total")
        log.error("audit log write failed for %s: %s: %s", rid, type(error).__name__, error)

    async def record(
        self, rid: str, verdict: Verdict, prompt: str, response: str, endpoint: str, model: Any, stream: bool
    ) -> bool:
        """Count the decision and wait until the audit log has committed it; False if it failed open.

        A write that fails withholds the answer (503, fail closed) unless `audit_fail_open` is set: then the
        answer is released, the failure is logged with the verdict and counted, and the answer says so.
        """
        self._count(verdict)
        try:
            await self.audit.arecord(
                rid, verdict, prompt, response, endpoint, str(model) if model else None, stream
            )
        except Exception as error:
            self.audit_failed(rid, error)
            if not self.config.audit_fail_open:
                raise HTTPError(
                    503,
                    f"audit log unavailable ({self.audit.describe()}): the decision could not be recorded, so "
                    "the answer is withheld",
                    "audit_error",
                ) from None
            log.warning(
                "AUDIT FAIL-OPEN: %s released without an audit record (action=%s, score=%s, category=%s)",
                rid,
                verdict.action,
                verdict.score,
                verdict.category,
            )
            return False
        return True

    def record_nowait(
        self, rid: str, verdict: Verdict, prompt: str, response: str, endpoint: str, model: Any, stream: bool
    ) -> None:
        """Count the decision and queue it for the audit log (for a cancelled request that cannot wait)."""
        self._count(verdict)
        try:
            done = self.audit.submit(
                rid, verdict, prompt, response, endpoint, str(model) if model else None, stream
            )
        except Exception as error:
            self.audit_failed(rid, error)
            return

        def committed(future: Any) -> None:
            if future.exception() is not None:
                self.audit_failed(rid, future.exception())

        done.add_done_callback(committed)

    def upstream_failed(self, error: UpstreamError) -> HTTPError:
        self.metrics.inc("seawall_upstream_errors_total", error.kind)
        log.warning("upstream failure: %s", error.message)
        return HTTPError(error.status, error.message, "upstream_error")


def verdict_extra(rid: str, verdict: Verdict, dropped: Dropped, audited: bool = True) -> dict[str, Any]:
    """The `seawall` object of an answer the guard changed: the verdict when not allow, and the fields dropped.

    An answer released without its audit record (`audit_fail_open`) always carries it, with `audited: false`.
    """
    if verdict.action == "allow" and not dropped and audited:
        return {}
    extra = {"request_id": rid, **verdict.to_dict(), "dropped": list(dropped)}
    return {"seawall": extra if audited else {**extra, "audited": False}}


# Header of an answer released although its decision could not be written (audit_fail_open).
UNAUDITED = {"x-seawall-audit": "unrecorded"}


def create_app(
    config: ServerConfig, guard: Guard, upstream: Any, audit: AuditLog, keys: list[bytes]
) -> FastAPI:
    """The proxy app around ready-made parts (see `build_app` to make them from a config); it closes them all."""
    state = GuardApp(config, guard, upstream, audit, keys)
    guard = state.guard  # the batching copy (same detector threads): every handler below checks through it

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        # Detector threads first: a hung detector must not keep the process alive (they are never waited for).
        guard.close()
        state.classify_guard.close()
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
            "audit": audit.describe(),
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

    async def guarded(request: Request, path: str, schema: type[ChatRequest | CompletionRequest]) -> Response:
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
            _limit_lengths(parsed, body, config.max_tokens)
            state.admit()
        except HTTPError as error:
            extra = {"Retry-After": "1"} if error.status == 429 else {}
            return error.response({**headers, **extra})
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
            answer = read_answer(path, upstream_json)
        except InvalidAnswer as error:
            raise state.upstream_failed(UpstreamError(502, "invalid", str(error))) from None
        prompt, text = _prompt_of(path, body), joined(answer.texts)
        verdict = most_severe(await guard.acheck_batch([(prompt, t) for t in checked_texts(answer.texts)]))
        audited = await state.record(rid, verdict, prompt, text, path, body.get("model"), stream=False)
        state.count_dropped(answer.dropped)
        headers = {**headers, "x-seawall-action": verdict.action, **({} if audited else UNAUDITED)}
        out = answer.blocked(guard.policy.refusal) if verdict.action == "block" else answer.released()
        return JSONResponse({**out, **verdict_extra(rid, verdict, answer.dropped, audited)}, headers=headers)

    async def stream_response(rid: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> Response:
        try:
            async with asyncio.timeout(config.request_timeout_s):
                chunks = await upstream.open_stream(path, body)
        except TimeoutError:
            raise state.upstream_failed(UpstreamError(504, "timeout", "upstream timed out")) from None
        except UpstreamError as error:
            raise state.upstream_failed(error) from None
        prompt = _prompt_of(path, body)
        sg = FieldStreamGuard(guard, prompt)
        fields = ChunkFields(path)
        dropped = Dropped()
        refusal = [(("text",) if path == COMPLETIONS else ("content",), guard.policy.refusal)]

        async def events() -> AsyncIterator[bytes]:
            envelope: dict[str, Any] = {}
            usage: dict[str, Any] | None = None
            finish = "stop"
            recorded = False

            async def record(verdict: Verdict) -> bool:
                nonlocal recorded
                recorded = True
                audited = await state.record(
                    rid, verdict, prompt, sg.text, path, body.get("model"), stream=True
                )
                state.count_dropped(dropped)
                return audited

            def error_event(failure: HTTPError) -> bytes:
                return _sse(
                    {"error": {"message": failure.message, "type": failure.kind, "code": failure.status}}
                )

            def chunk(pieces: list, finish_reason: str | None = None, **extra: Any) -> bytes:
                return _sse({**envelope, "choices": [fields.choice(pieces, finish_reason)], **extra})

            try:
                try:
                    async for item in chunks:
                        if not isinstance(item, dict):
                            dropped.add("chunk")
                            continue
                        if not envelope:
                            envelope = envelope_of(path, item, dropped, chunk=True)
                        if item.get("usage") is not None:
                            usage = usage_of(item["usage"], dropped)
                        pieces = []
                        for choice in chunk_choices(item, dropped):
                            index = choice.get("index", 0) if isinstance(choice, dict) else None
                            if index != 0:
                                # One choice is asked for (n=1); any other is dropped, never sent unchecked.
                                dropped.add(f"choices[{str(index)[:20]}]")
                                continue
                            finish = finish_reason_of(choice, "chunk", dropped) or finish
                            pieces += fields.pieces(choice, dropped)
                        if not pieces:
                            continue
                        out = await sg.afeed(pieces)
                        if sg.blocked:
                            yield chunk(refusal)
                            break
                        if out:
                            yield chunk(out)
                except UpstreamError as error:
                    # Part of the response may already be with the client: this is a decision, so audit it.
                    failure = state.upstream_failed(error)
                    with contextlib.suppress(HTTPError):  # an audit failure is logged and counted already
                        await record(sg.interrupted("upstream_error", failure.message))
                    yield error_event(failure)
                    yield b"data: [DONE]\n\n"
                    return
                final: list = []
                if not sg.blocked:
                    out = await sg.afinish()
                    final = refusal if sg.blocked else out
                verdict = sg.verdict
                assert verdict is not None
                try:
                    # The held-back tail is released only once the decision is committed (or failed open).
                    audited = await record(verdict)
                except HTTPError as failure:
                    yield error_event(failure)
                    yield b"data: [DONE]\n\n"
                    return
                if final:
                    yield chunk(final)
                extra = verdict_extra(rid, verdict, dropped, audited)
                if usage is not None:
                    extra["usage"] = usage
                yield chunk([], "content_filter" if sg.blocked else finish, **extra)
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

    lengths = {"max_tokens": config.max_tokens, "max_completion_tokens": config.max_tokens}

    @app.post("/v1/chat/completions", openapi_extra=openapi_body(ChatRequest, lengths))
    async def chat_completions(request: Request) -> Response:
        """OpenAI chat completions, checked by the guard (stream true/false)."""
        return await guarded(request, "/chat/completions", ChatRequest)

    @app.post("/v1/completions", openapi_extra=openapi_body(CompletionRequest, lengths))
    async def completions(request: Request) -> Response:
        """OpenAI text completions, checked by the guard (stream true/false)."""
        return await guarded(request, COMPLETIONS, CompletionRequest)

    async def scored_batch(
        request: Request, rid: str, endpoint: str, parse: Any
    ) -> tuple[list[Verdict], dict[str, str]] | Response:
        """Auth, parsing (`parse(raw)` → (pairs, model, param)), size caps and admission, then one detector batch
        with one audit row per pair; the verdicts and response headers, or the error response."""
        headers = {"x-request-id": rid}
        try:
            state.authorize(request)
            pairs, model, param = parse(await state.read_json(request))
            _limit_batch([prompt + response for prompt, response in pairs], config, param)
            state.admit()
        except HTTPError as error:
            extra = {"Retry-After": "1"} if error.status == 429 else {}
            return error.response({**headers, **extra})
        try:
            verdicts = await state.classify_guard.acheck_batch(pairs)
            audited = await asyncio.gather(
                *(
                    state.record(f"{rid}:{i}", verdict, prompt, response, endpoint, model, stream=False)
                    for i, ((prompt, response), verdict) in enumerate(zip(pairs, verdicts, strict=True))
                )
            )
        except HTTPError as error:
            return error.response(headers)
        finally:
            state.in_flight -= 1
        return verdicts, {**headers, **({} if all(audited) else UNAUDITED)}

    def classify_pairs(raw: Any) -> tuple[list[tuple[str, str]], None, str]:
        try:
            parsed = ClassifyRequest.model_validate(raw)
        except ValidationError as error:
            raise _field_error(error) from None
        return [(p.prompt, p.response) for p in parsed.pairs], None, "pairs"

    def moderation_pairs(raw: Any) -> tuple[list[tuple[str, str]], str | None, str]:
        try:
            parsed = ModerationRequest.model_validate(raw)
            texts = input_texts(parsed)
        except ValidationError as error:
            raise _field_error(error) from None
        except InputError as error:
            raise HTTPError(400, f"invalid request: {error}", param="input") from None
        return [("", text) for text in texts], parsed.model, "input"

    @app.post("/v1/classify", openapi_extra=openapi_body(ClassifyRequest))
    async def classify(request: Request) -> Response:
        """Score a batch of (prompt, response) pairs; every verdict is audited."""
        rid = f"req-{uuid.uuid4().hex}"
        scored = await scored_batch(request, rid, "/classify", classify_pairs)
        if isinstance(scored, Response):
            return scored
        verdicts, headers = scored
        return JSONResponse({"request_id": rid, "results": [v.to_dict() for v in verdicts]}, headers=headers)

    @app.post("/v1/moderations", openapi_extra=openapi_body(ModerationRequest))
    async def moderations(request: Request) -> Response:
        """OpenAI's moderation API: each input text scored as a response to an empty prompt; one audit row each."""
        rid = f"modr-{uuid.uuid4().hex}"
        scored = await scored_batch(request, rid, "/moderations", moderation_pairs)
        if isinstance(scored, Response):
            return scored
        verdicts, headers = scored
        body = {
            "id": rid,
            "model": state.guard.detector_id,
            "results": [moderation_result(v) for v in verdicts],
        }
        return JSONResponse(body, headers=headers)

    return app


def _limit_batch(texts: list[str], config: ServerConfig, param: str) -> None:
    """One /v1/classify or /v1/moderations call may hold at most `classify_max_pairs` items and
    `classify_max_chars` characters."""
    if len(texts) > config.classify_max_pairs:
        raise HTTPError(
            400,
            f"invalid request: {param}: {len(texts)} items exceed the limit {config.classify_max_pairs}",
            param=param,
        )
    chars = sum(len(t) for t in texts)
    if chars > config.classify_max_chars:
        raise HTTPError(
            413,
            f"{param} hold {chars} characters, over the limit of {config.classify_max_chars}",
            param=param,
        )


def upstream_api_key(config: ServerConfig) -> str | None:
    """The upstream's API key from `upstream_api_key_env`; a named variable that is unset is an error."""
    if not config.upstream_api_key_env:
        return None
    key = os.environ.get(config.upstream_api_key_env)
    if not key:
        raise SeawallError(
            f"upstream_api_key_env: environment variable {config.upstream_api_key_env} is not set (or empty); "
            "refusing to call the upstream without its key"
        )
    return key


def make_upstream(config: ServerConfig) -> Any:
    """The upstream `config` names: its URL (with its API key), else the in-process local model."""
    if config.upstream_url:
        return HTTPUpstream(config.upstream_url, config.request_timeout_s, upstream_api_key(config))
    from seawall.generation import load_generator
    from seawall.generation.transformers_backend import DEFAULT_MODEL

    model = config.local_model or DEFAULT_MODEL
    return LocalUpstream(load_generator("transformers", model=model), model, config.max_tokens)


def build_app(config: ServerConfig) -> FastAPI:
    """Make the keys, detector, guard, upstream and audit log from `config`, then the app."""
    from seawall.guard.detectors import resolve_detector

    # Configuration mistakes first, before a detector or a model is loaded.
    keys = load_api_keys(config)
    if not keys and not is_loopback(config.host):
        log.warning(
            "OPEN PROXY: serving %s without API keys (allow_open is set): anyone who can reach it can use it",
            config.host,
        )
    if config.upstream_url:
        upstream_api_key(config)
    guard = Guard(resolve_detector(config.detector), config.policy)
    upstream = make_upstream(config)
    audit = open_audit_log(
        config.audit_target(),
        config.audit_store_text,
        config.audit_synchronous,
        pool_size=config.audit_pool_size,
        timeout_s=config.audit_timeout_s,
    )
    return create_app(config, guard, upstream, audit, keys)
