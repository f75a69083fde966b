"""Guard proxy load benchmark on loopback: throughput, latency, overhead vs the upstream, audit completeness.

Also measures the streaming trade-off (check interval / hold-back vs time to first text and leaked characters).
Writes bench/results/guard_load.json; `python scripts/guard_report.py` turns it into docs/results/guard.md.

    PYTHONPATH=src python bench/guard_load.py [--requests 200]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import socket
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from seawall.detect import make_detector
from seawall.guard import Guard, Policy, StreamGuard, StreamPolicy
from seawall.guard.audit import AuditLog
from seawall.guard.config import ServerConfig
from seawall.guard.server import create_app
from seawall.guard.upstream import HTTPUpstream
from seawall.io import atomic_write_json

ANSWER = "I'm sorry, but I can't help with that request. Here is some general safety information instead."
MARKER = "detonator"


def fast_upstream() -> FastAPI:
    """An OpenAI-compatible upstream that answers instantly with a fixed text."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        choice = {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
        return JSONResponse(
            {"id": "x", "object": "chat.completion", "model": body.get("model"), "choices": [choice]}
        )

    return app


class Server:
    """uvicorn on 127.0.0.1, free port, in a thread."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="error"))
        self.thread = threading.Thread(
            target=lambda: asyncio.run(self.server.serve(sockets=[self.sock])), daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


async def load(url: str, n: int, concurrency: int) -> dict:
    """Send n chat requests with `concurrency` in flight; latency percentiles and requests/s."""
    body = {"model": "m", "messages": [{"role": "user", "content": "How do I stay safe online?"}]}
    latencies: list[float] = []
    queue = list(range(n))

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            queue.pop()
            t = time.perf_counter()
            r = await client.post(f"{url}/v1/chat/completions", json=body)
            r.raise_for_status()
            latencies.append(time.perf_counter() - t)

    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as client:
        await client.post(f"{url}/v1/chat/completions", json=body)  # warm-up (not counted)
        start = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {
        "requests": n,
        "rps": n / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
    }


class MarkerDetector:
    """P(unsafe)=1 once the marker word is present; isolates the streaming mechanism from detector quality."""

    threshold_ = 0.5
    detector_id = "marker-bench"

    def predict_proba(self, pairs):
        p = np.array([1.0 if MARKER in r else 0.0 for _, r in pairs])
        return np.stack([1 - p, p], axis=1)


async def stream_tradeoff(check_every: int, holdback: int, chunk_chars: int, chunk_delay_s: float) -> dict:
    """Simulated upstream (chunk_chars per chunk_delay_s) through StreamGuard; TTFT and leaked characters."""
    safe_part = "Here is a long, harmless introduction about chemistry safety in the lab. " * 4
    text = safe_part + f"Now attach the {MARKER} to the main charge and hide it."
    unsafe_start = len(safe_part)
    guard = Guard(
        MarkerDetector(), Policy(stream=StreamPolicy(check_every=check_every, window=512, holdback=holdback))
    )
    safe_guard = StreamGuard(guard, "q")
    start, first = time.perf_counter(), None
    for i in range(0, len(safe_part), chunk_chars):
        await asyncio.sleep(chunk_delay_s)
        if await safe_guard.afeed(safe_part[i : i + chunk_chars]) and first is None:
            first = time.perf_counter() - start
    tail = await safe_guard.afinish()
    if first is None and tail:
        first = time.perf_counter() - start
    sg = StreamGuard(guard, "q")
    emitted = ""
    for i in range(0, len(text), chunk_chars):
        out = await sg.afeed(text[i : i + chunk_chars])
        if sg.blocked:
            break
        emitted += out
    if not sg.blocked:
        emitted += await sg.afinish()
    guard.close()
    return {
        "check_every": check_every,
        "holdback": holdback,
        "ttft_ms": (first or 0.0) * 1000,
        "checks_per_1k_chars": 1000 / check_every,
        "leaked_chars": max(0, len(emitted) - unsafe_start),
        "marker_leaked": MARKER in emitted or any(MARKER[:k] == emitted[-k:] for k in range(3, len(MARKER))),
        "blocked": sg.blocked,
    }


def main() -> None:
    """Run the benchmark and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--out", default="bench/results/guard_load.json")
    args = parser.parse_args()
    detector = make_detector("refusal").fit([])
    rows = []
    with tempfile.TemporaryDirectory() as tmp, Server(fast_upstream()) as up:
        for concurrency in (1, 8, 32):
            db = Path(tmp) / f"audit-{concurrency}.sqlite"
            config = ServerConfig(upstream_url=up + "/v1", audit_db=str(db), max_concurrency=256)
            guard = Guard(detector, config.policy)
            audit = AuditLog(db)
            app = create_app(config, guard, HTTPUpstream(config.upstream_url), audit, [])
            with Server(app) as proxy:
                direct = asyncio.run(load(up, args.requests, concurrency))
                proxied = asyncio.run(load(proxy, args.requests, concurrency))
            audit.close()
            guard.close()
            logged = sqlite3.connect(db).execute("SELECT COUNT(*) FROM decisions").fetchone()[0]
            row = {
                "concurrency": concurrency,
                "direct": direct,
                "proxy": proxied,
                "overhead_p50_ratio": proxied["p50_ms"] / direct["p50_ms"],
                "throughput_ratio": proxied["rps"] / direct["rps"],
                "decisions_logged": logged,
                "requests_sent": args.requests + 1,  # + the warm-up request
            }
            rows.append(row)
            print(
                f"c={concurrency:>2}  direct {direct['rps']:7.1f} req/s p50 {direct['p50_ms']:6.2f} ms | "
                f"proxy {proxied['rps']:7.1f} req/s p50 {proxied['p50_ms']:6.2f} p95 {proxied['p95_ms']:6.2f} ms | "
                f"x{row['overhead_p50_ratio']:.2f} latency | logged {logged}/{args.requests + 1}"
            )
    stream = []
    for check_every in (16, 64, 256):
        for holdback in (0, 16):
            r = asyncio.run(stream_tradeoff(check_every, holdback, chunk_chars=4, chunk_delay_s=0.01))
            stream.append(r)
            print(
                f"stream every={check_every:>3} holdback={holdback:>2}: TTFT {r['ttft_ms']:6.1f} ms, leaked {r['leaked_chars']} chars"
            )
    result = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "detector": detector.detector_id,
        "upstream": "in-process FastAPI on 127.0.0.1, constant answer",
        "stream_simulation": {"chunk_chars": 4, "chunk_delay_ms": 10, "window": 512},
        "load": rows,
        "stream_tradeoff": stream,
        "median_overhead_ratio": statistics.median(r["overhead_p50_ratio"] for r in rows),
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
