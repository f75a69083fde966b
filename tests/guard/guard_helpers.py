"""Guard test helpers: a keyword detector, a real OpenAI-compatible upstream and the proxy, both on loopback."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from contextlib import contextmanager

import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from seawall.guard.audit import SQLiteAuditLog
from seawall.guard.config import ServerConfig
from seawall.guard.guard import Guard
from seawall.guard.server import create_app
from seawall.guard.upstream import HTTPUpstream

UNSAFE_WORD = "detonator"
BORDERLINE_WORD = "tripwire"  # P(unsafe) 0.4: below the default threshold, above a strict category rule


class KeywordDetector:
    """Implements the detector contract: P(unsafe)=0.9 when the response holds UNSAFE_WORD, else 0.1."""

    threshold_ = 0.5
    detector_id = "keyword-test-1"

    def __init__(self, delay: float = 0.0, fail: bool = False, delay_on: str | None = None) -> None:
        """`delay` seconds per call (only for calls whose responses hold `delay_on`, when given)."""
        self.delay, self.fail, self.delay_on = delay, fail, delay_on
        self.calls = 0

    def predict_proba(self, pairs):
        self.calls += 1
        if self.delay and (self.delay_on is None or any(self.delay_on in r for _, r in pairs)):
            time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("detector exploded")
        p = np.array([_keyword_score(r) for _, r in pairs])
        return np.stack([1 - p, p], axis=1)

    def predict_category(self, pairs, scores=None, threshold=None):
        """Like `Detector.predict_category`: a category only for pairs scored at or above `threshold`."""
        threshold = self.threshold_ if threshold is None else threshold
        scores = [_keyword_score(r) for _, r in pairs] if scores is None else scores
        return [
            "Physical harm" if s >= threshold and s > 0.1 else None
            for (_, r), s in zip(pairs, scores, strict=True)
        ]


def _keyword_score(response: str) -> float:
    text = response.lower()
    return 0.9 if UNSAFE_WORD in text else 0.4 if BORDERLINE_WORD in text else 0.1


def answer_for(prompt: str) -> str:
    """The upstream's deterministic answer: `say:<text>` answers <text>, anything else echoes the prompt.

    `sleep:<s>` waits first; `die:` streams two chunks then drops the connection;
    `slow:` streams a chunk every 50 ms.
    """
    return prompt[4:] if prompt.startswith("say:") else f"You said: {prompt}"


def upstream_app() -> FastAPI:
    """A small OpenAI-compatible server (chat and text completions, streaming in 5-character chunks)."""
    app = FastAPI()
    app.state.requests = 0

    async def handle(request: Request, chat: bool):
        body = await request.json()
        app.state.requests += 1
        prompt = body["messages"][-1]["content"] if chat else body["prompt"]
        if prompt.startswith("sleep:"):
            await asyncio.sleep(float(prompt.split(":")[1]))
        text = answer_for(prompt)
        base = {"id": "up-1", "created": 1, "model": body.get("model", "up")}
        if not body.get("stream"):
            choice = {"index": 0, "finish_reason": "stop"}
            choice.update({"message": {"role": "assistant", "content": text}} if chat else {"text": text})
            usage = {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}
            obj = "chat.completion" if chat else "text_completion"
            return JSONResponse({**base, "object": obj, "choices": [choice], "usage": usage})

        async def events():
            obj = "chat.completion.chunk" if chat else "text_completion"
            if chat:
                yield f"data: {json.dumps({**base, 'object': obj, 'choices': [{'index': 0, 'delta': {'role': 'assistant'}, 'finish_reason': None}]})}\n\n"
            for i in range(0, len(text), 5):
                if prompt.startswith("die:") and i >= 10:
                    # Break the connection mid-stream, as a crashing upstream would.
                    raise RuntimeError("upstream crashed mid-stream")
                piece = text[i : i + 5]
                choice = {"index": 0, "finish_reason": None}
                choice.update({"delta": {"content": piece}} if chat else {"text": piece})
                yield f"data: {json.dumps({**base, 'object': obj, 'choices': [choice]})}\n\n"
                await asyncio.sleep(0.05 if prompt.startswith("slow:") else 0)
            end = {"index": 0, "finish_reason": "stop"}
            end.update({"delta": {}} if chat else {"text": ""})
            yield f"data: {json.dumps({**base, 'object': obj, 'choices': [end]})}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        return await handle(request, chat=True)

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await handle(request, chat=False)

    return app


def scripted_upstream_app() -> FastAPI:
    """An OpenAI-compatible upstream that answers whatever the request's `x_upstream` field scripts.

    The proxy forwards unknown request fields, so a test (or a fuzzer) decides the upstream's exact answer:
    `{"answer": {...}}` is returned as JSON, `{"chunks": [...]}` is streamed as SSE when the request streams.
    Every body received is kept in `app.state.bodies`.
    """
    app = FastAPI()
    app.state.bodies = []

    async def handle(request: Request):
        body = await request.json()
        app.state.bodies.append(body)
        script = body.get("x_upstream") if isinstance(body.get("x_upstream"), dict) else {}
        if body.get("stream") is True:
            chunks = script.get("chunks") or []

            async def events():
                for item in chunks:
                    yield f"data: {json.dumps(item)}\n\n"
                yield "data: [DONE]\n\n"

            return StreamingResponse(events(), media_type="text/event-stream")
        default = {"id": "up-1", "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}]}
        return JSONResponse(script.get("answer") or default)

    app.post("/v1/chat/completions")(handle)
    app.post("/v1/completions")(handle)
    return app


@contextmanager
def serve(app) -> str:
    """Run `app` with uvicorn on 127.0.0.1 on a free port in a thread; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.time() + 10
    while not server.started:
        if time.time() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def free_dead_url() -> str:
    """A loopback URL where nothing listens (port bound then released)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/v1"


@contextmanager
def proxy(tmp_path, upstream: str | None, detector=None, upstream_obj=None, keys=(), **config):
    """Start the guard proxy for real; yields (base_url, audit db path, app)."""
    cfg = ServerConfig(upstream_url=upstream, audit_db=str(tmp_path / "audit.sqlite"), **config)
    guard = Guard(detector or KeywordDetector(), cfg.policy)
    up = upstream_obj or HTTPUpstream(upstream, cfg.request_timeout_s)
    audit = SQLiteAuditLog(cfg.audit_db, cfg.audit_store_text)
    app = create_app(cfg, guard, up, audit, [k.encode() for k in keys])
    with serve(app) as url:
        yield url, cfg.audit_db, app
    audit.close()
    guard.close()
