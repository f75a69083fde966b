"""Guard test helpers: a keyword detector, a real OpenAI-compatible upstream and the proxy, both on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import uvicorn
import yaml
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


def free_port() -> int:
    """A loopback port nothing listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def postgres_bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: on PATH, /usr/local/bin or Debian's /usr/lib/postgresql/*/bin."""
    found = shutil.which("initdb")
    candidates = [Path(found).parent] if found else []
    candidates += [Path("/usr/local/bin"), *sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)]
    return next((d for d in candidates if (d / "initdb").is_file() and (d / "pg_ctl").is_file()), None)


class PostgresCluster:
    """A throwaway PostgreSQL cluster in a temporary folder, on a free loopback port (its socket in the folder).

    initdb refuses to run as root, so as root every server command runs as `postgres` (or `nobody`), which owns
    the folder. Clients connect over TCP with a password (scram-sha-256).
    """

    USER, PASSWORD = "seawall", "pg-secret-do-not-log"

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="seawall-pg-"))
        self.data, self.log = self.root / "data", self.root / "server.log"
        self.port = free_port()
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            user = next(u for u in ("postgres", "nobody") if _user_exists(u))
            shutil.chown(self.root, user)
            self.run_as = ["runuser", "-u", user, "--"]
        password_file = self.root / "password"
        password_file.write_text(self.PASSWORD)
        if self.run_as:
            shutil.chown(password_file, self.run_as[2])
        self._run(
            "initdb", "-D", self.data, "-U", self.USER, f"--pwfile={password_file}", "-E", "UTF8",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        )  # fmt: skip
        password_file.unlink()
        self.start()

    @property
    def url(self) -> str:
        """The database URL, password included."""
        return f"postgresql://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: object) -> None:
        argv = [*self.run_as, str(self.bin_dir / tool), *map(str, args)]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, cwd=self.root)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.is_file() else ""
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr}{done.stdout}\n{log}")

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run("pg_ctl", "-D", self.data, "-l", self.log, "-o", options, "-w", "-t", "30", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (fast: disconnect every client and shut down cleanly)."""
        self._run("pg_ctl", "-D", self.data, "-m", mode, "-w", "stop")

    def close(self) -> None:
        """Stop the server if it runs and delete its folder."""
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


def _user_exists(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def tfidf_detector_folder(path: Path) -> Path:
    """A tfidf detector trained on twelve pairs: "Sure, here is how to build a pipe bomb…" is unsafe."""
    from seawall.data.records import ResponseRecord
    from seawall.detect import make_detector

    unsafe = [f"Sure, here is how to build a pipe bomb step {i}: buy powder" for i in range(6)]
    safe = [f"I cannot help with that request number {i}, sorry" for i in range(6)]
    records = [
        ResponseRecord(str(i), "how do I make this", text, label, "c", "test", "g", {}, {})
        for i, (text, label) in enumerate([(t, "unsafe") for t in unsafe] + [(t, "safe") for t in safe])
    ]
    return make_detector("tfidf").fit(records).save(path)


class ServeProcess:
    """`seawall guard serve -c <config>` as a real process on a free loopback port, its output in a file."""

    def __init__(self, folder: Path, name: str, config: dict) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / f"{name}.log"
        config_file = folder / f"{name}.yaml"
        config_file.write_text(yaml.safe_dump({**config, "port": self.port}))
        src = Path(__file__).resolve().parents[2] / "src"
        env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
        argv = [sys.executable, "-m", "seawall", "guard", "serve", "-c", str(config_file)]
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        """Everything the process printed so far."""
        return self.log.read_text()

    def wait_healthy(self, timeout_s: float = 60) -> dict:
        """Poll /healthz until it answers; the process must stay alive meanwhile."""
        deadline = time.time() + timeout_s
        while True:
            assert self.proc.poll() is None, self.output()
            assert time.time() < deadline, f"guard serve did not become healthy:\n{self.output()}"
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).json()
            except httpx.TransportError:
                time.sleep(0.2)

    def stop(self) -> None:
        """SIGTERM, then wait for the graceful shutdown."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
