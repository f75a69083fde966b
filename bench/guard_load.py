"""Guard proxy load benchmark on loopback: throughput, latency, overhead vs the upstream, audit completeness.

The fake upstream and the proxy (`seawall guard serve`, the real CLI) each run in their own process (uvicorn on
127.0.0.1, free ports, stopped at the end); the load client runs in this process and calls the upstream directly
and through the proxy in the same run, so the ratio is proxy / direct on the same machine state.
Also measures the streaming trade-off (check interval / hold-back vs time to first text and leaked characters).
The proxy's detector is the `refusal` matcher by default (the proxy's own cost); `--detector DIR` uses a trained
detector folder instead (an encoder scores with its bf16 copy on CPUs with bf16 units, see `seawall detect bench`),
so the figures include one real detector call per request; before the rounds, that detector's own time for the
check a request makes (one pair, and 8 at once) is measured in this process, loaded as the proxy loads it
(`detector_latency`), for issue 12's target: proxy p50 at concurrency 8 ≤ direct p50 + its batch-1 p50 + 2 ms.
`--batch-wait-ms`, `--max-batch` and `--max-inflight-batches` set the proxy's micro-batching of concurrent
detector calls (default: the ServerConfig defaults; `--batch-wait-ms 0` turns it off).
After the proxies shut down, their audit rows and the distinct request ids among them are counted against the
requests sent: every decision logged exactly once means all three are equal.
The 1-, 5- and 15-minute load averages before and after are recorded and printed, with a loud warning when the
machine was busy at the start.
Writes bench/results/guard_load.json; `python scripts/guard_report.py` turns it into docs/results/guard.md.

    PYTHONPATH=src python bench/guard_load.py [--requests 400] [--rounds 3] [--baseline-src OLD/src]
    PYTHONPATH=src python bench/guard_load.py --detector ~/.cache/seawall/detectors/default \
        --requests 200 --out bench/results/guard_load_encoder.json
    PYTHONPATH=src python bench/guard_load.py --detector ~/.cache/seawall/detectors/default --batch-wait-ms 0 \
        --requests 200 --out bench/results/guard_load_encoder_unbatched.json
    PYTHONPATH=src python bench/guard_load.py --audit-synchronous FULL --out bench/results/guard_load_full.json
    PYTHONPATH=src python scripts/guard_report.py bench/results/guard_load.json docs/results/guard.md \
        bench/results/guard_load_full.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from seawall.benchmarks import load_average, warn_if_busy
from seawall.guard import Guard, Policy, ServerConfig, StreamGuard, StreamPolicy
from seawall.guard.detectors import resolve_detector
from seawall.io import atomic_write_json

PROMPT = "How do I stay safe online?"
ANSWER = "I'm sorry, but I can't help with that request. Here is some general safety information instead."
MARKER = "detonator"
SRC = Path(__file__).resolve().parents[1] / "src"


def fast_upstream() -> FastAPI:
    """An OpenAI-compatible upstream that answers instantly with a fixed text."""
    app = FastAPI()

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        choice = {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
        return JSONResponse(
            {"id": "x", "object": "chat.completion", "model": body.get("model"), "choices": [choice]}
        )

    return app


def free_port() -> int:
    """A port nothing listens on at the moment (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Process:
    """A server subprocess on 127.0.0.1:port; waits for GET /healthz, terminates (SIGTERM) on exit."""

    def __init__(self, argv: list[str], port: int, log: Path, src: Path = SRC) -> None:
        self.argv, self.url, self.log, self.src = argv, f"http://127.0.0.1:{port}", log, src

    def __enter__(self) -> str:
        env = {**os.environ, "PYTHONPATH": str(self.src), "HF_HUB_OFFLINE": "1"}
        self.out = self.log.open("w")
        self.proc = subprocess.Popen(self.argv, env=env, stdout=self.out, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv[:4]} exited early:\n{self.log.read_text()}")
            if time.time() > deadline:
                raise RuntimeError(f"{self.url} did not become healthy:\n{self.log.read_text()}")
            try:
                httpx.get(f"{self.url}/healthz", timeout=1).raise_for_status()
                return self.url
            except httpx.HTTPError:
                time.sleep(0.1)

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.out.close()


def serve_upstream(port: int) -> None:
    """Child-process entry point: the fast upstream on 127.0.0.1:port."""
    uvicorn.run(fast_upstream(), host="127.0.0.1", port=port, log_level="warning", access_log=False)


async def load(url: str, n: int, concurrency: int) -> dict:
    """Send n chat requests with `concurrency` in flight; latency percentiles and requests/s."""
    body = {"model": "m", "messages": [{"role": "user", "content": PROMPT}]}
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, all its threads (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def count_decisions(db: Path) -> tuple[int, int]:
    """Rows in the audit log and the distinct request ids among them (read-only).

    Rows equal to requests sent could still hide one request logged twice and another not at all; with as many
    distinct request ids as rows, every row is a different request's (the baseline's schema may not enforce it).
    """
    if not db.exists():
        return 0, 0
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows, distinct = conn.execute("SELECT COUNT(*), COUNT(DISTINCT request_id) FROM decisions").fetchone()
        return rows, distinct
    finally:
        conn.close()


def median_run(runs: list[dict]) -> dict:
    """Per-field median over rounds (each round already sent the same number of requests)."""
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


# Backends whose scoring runs a torch model and so has a precision (fp32, bf16 autocast, int8, ONNX).
NEURAL_BACKENDS = ("encoder", "lm-judge", "cascade")


def detector_info(detector: str) -> dict:
    """What the proxies score with: the `refusal` matcher, or a detector folder's id, backend and precision."""
    if detector == "refusal":
        return {"detector": "refusal"}
    import json

    from seawall.models.precision import resolve_precision

    config = json.loads((Path(detector) / "detector.json").read_text())
    params = config.get("params", {})
    if config.get("backend") not in NEURAL_BACKENDS:  # TF-IDF and friends have no precision to speak of
        scoring = "cpu"
    elif params.get("runtime") == "onnx":
        scoring = "onnx"
    else:
        scoring = resolve_precision(params.get("precision", "auto"))
    return {
        "detector": str(detector),
        "detector_id": config.get("detector_id"),
        "backend": config.get("backend"),
        "scoring": "int8" if params.get("quantize") else scoring,
    }


def detector_latency(detector: str, repetitions: int = 50, warmups: int = 5) -> dict:
    """The detector's own time for the check every load request makes, alone and 8 at once, in this process.

    Loaded by the proxy's own `resolve_detector`, so with the same precision and threads, and scored through a
    `Guard` without batching: one detector call on a detector thread per check, as each of the proxy's calls is,
    minus HTTP, the batch window and the audit log. Batch-1 and batch-8 calls alternate, so load drifting during
    the measurement hits both alike; the warm-ups build the bf16 copy of an encoder's weights outside the timing.
    """
    loaded = resolve_detector(detector)
    guard = Guard(loaded)
    times: dict[int, list[float]] = {1: [], 8: []}
    try:
        for repetition in range(warmups + repetitions):
            for size, taken in times.items():
                start = time.perf_counter()
                verdicts = guard.check_batch([(PROMPT, ANSWER)] * size)
                elapsed_ms = (time.perf_counter() - start) * 1000
                failure = next((v.error for v in verdicts if v.error), None)
                if failure:
                    raise RuntimeError(
                        f"detector {detector} failed while its latency was measured: {failure}"
                    )
                if repetition >= warmups:
                    taken.append(elapsed_ms)
    finally:
        guard.close()
    # Encoders and LM judges say how they score here (e.g. torch-bfloat16); a TF-IDF model has no such choice.
    scoring_path = getattr(loaded, "scoring_path", None)
    return {
        "batch_1_p50_ms": float(np.percentile(times[1], 50)),
        "batch_1_p95_ms": float(np.percentile(times[1], 95)),
        "batch_8_p50_ms": float(np.percentile(times[8], 50)),
        "precision": scoring_path() if scoring_path else None,
        "repetitions": repetitions,
    }


def start_proxy(
    tmp: Path, name: str, upstream: str, src: Path, synchronous: str, detector: str, batching: dict
) -> tuple[Process, Path]:
    """A `seawall guard serve` process (from the source tree `src`) with its own audit log.

    `batching` (batch_wait_ms, max_batch) is added to its config as given (empty: the proxy's defaults).
    """
    port, db = free_port(), tmp / f"audit-{name}.sqlite"
    config = {
        "upstream_url": upstream + "/v1",
        "port": port,
        # `refusal` needs no training and measures the proxy itself; a detector folder adds a real model call
        "detector": detector,
        "audit_db": str(db),
        "max_concurrency": 256,
        "audit_synchronous": synchronous,
        **batching,
    }
    (tmp / f"{name}.yaml").write_text(yaml.safe_dump(config))
    argv = [sys.executable, "-m", "seawall", "guard", "serve", "-c", str(tmp / f"{name}.yaml")]
    return Process(argv, port, tmp / f"{name}.log", src), db


def main() -> None:
    """Run the benchmark and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400, help="Requests per round and concurrency level.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds; medians are reported.")
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="Also run a proxy from this source tree (e.g. `git archive <commit> src`) in the same rounds.",
    )
    parser.add_argument(
        "--audit-synchronous", choices=["NORMAL", "FULL"], default="NORMAL", help="The proxies' SQLite mode."
    )
    parser.add_argument(
        "--detector",
        default="refusal",
        help="The proxies' detector: `refusal` (default) or a trained detector folder, e.g. an encoder.",
    )
    parser.add_argument(
        "--batch-wait-ms",
        type=float,
        help="The proxy's batch_wait_ms: concurrent checks within it share one detector call (0: off). "
        "Default: the ServerConfig default. Not passed to --baseline-src, whose config may not know it.",
    )
    parser.add_argument(
        "--max-batch", type=int, help="The proxy's max_batch (pairs per shared detector call)."
    )
    parser.add_argument(
        "--max-inflight-batches",
        type=int,
        help="The proxy's max_inflight_batches (detector calls running at once; later checks gather meanwhile).",
    )
    parser.add_argument("--out", default="bench/results/guard_load.json")
    parser.add_argument("--serve-upstream", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_upstream:
        serve_upstream(args.serve_upstream)
        return
    load_before = load_average()
    busy = warn_if_busy(load_before, "guard load bench")
    detector = detector_info(args.detector)
    # The detector's own time, which issue 12's target adds to the upstream's; measured before any server starts,
    # so nothing of this bench competes with it.
    latency = None if args.detector == "refusal" else detector_latency(args.detector)
    if latency:
        print(
            f"detector alone ({latency['precision'] or detector['backend']}): one check p50 "
            f"{latency['batch_1_p50_ms']:.2f} ms, p95 {latency['batch_1_p95_ms']:.2f} ms; 8 at once p50 "
            f"{latency['batch_8_p50_ms']:.2f} ms"
        )
    batching = {
        key: value
        for key, value in (
            ("batch_wait_ms", args.batch_wait_ms),
            ("max_batch", args.max_batch),
            ("max_inflight_batches", args.max_inflight_batches),
        )
        if value is not None
    }
    targets = ["direct", "proxy"] + (["baseline"] if args.baseline_src else [])
    runs: dict[tuple[int, str], list[dict]] = {}
    logged: dict[str, tuple[int, int]] = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        tmp = Path(tmp)
        up_port = free_port()
        upstream = Process(
            [sys.executable, __file__, "--serve-upstream", str(up_port)], up_port, tmp / "upstream.log"
        )
        urls = {"direct": stack.enter_context(upstream)}
        pids = {"direct": upstream.proc.pid}
        dbs = {}
        for name in targets[1:]:
            src = SRC if name == "proxy" else args.baseline_src.resolve()
            process, dbs[name] = start_proxy(
                tmp,
                name,
                urls["direct"],
                src,
                args.audit_synchronous,
                args.detector,
                batching if name == "proxy" else {},
            )
            urls[name] = stack.enter_context(process)
            pids[name] = process.proc.pid
        for round_ in range(args.rounds):
            for concurrency in (1, 8, 32):
                # Rotate the order so no target always runs first (machine load drifts).
                order = targets[round_ % len(targets) :] + targets[: round_ % len(targets)]
                for name in order:
                    # CPU seconds of the server that answers (the upstream for direct, else that proxy):
                    # far less sensitive to other jobs on the machine than latency is.
                    pid = pids[name]
                    cpu = cpu_seconds(pid)
                    result = asyncio.run(load(urls[name], args.requests, concurrency))
                    result["server_cpu_ms_per_request"] = (
                        (cpu_seconds(pid) - cpu) * 1000 / (args.requests + 1)
                    )
                    runs.setdefault((concurrency, name), []).append(result)
        stack.close()  # stops the servers; a graceful shutdown must leave every decision on disk
        logged = {name: count_decisions(db) for name, db in dbs.items()}
    sent = args.rounds * 3 * (args.requests + 1)  # + one warm-up request per round and level
    rows = []
    for concurrency in (1, 8, 32):
        row: dict = {"concurrency": concurrency}
        for name in targets:
            row[name] = median_run(runs[(concurrency, name)])
        for name in targets[1:]:
            suffix = "" if name == "proxy" else "_baseline"
            row[f"overhead_p50_ratio{suffix}"] = row[name]["p50_ms"] / row["direct"]["p50_ms"]
            row[f"overhead_p95_ratio{suffix}"] = row[name]["p95_ms"] / row["direct"]["p95_ms"]
            row[f"throughput_ratio{suffix}"] = row[name]["rps"] / row["direct"]["rps"]
            row[f"cpu_ratio{suffix}"] = (
                row[name]["server_cpu_ms_per_request"] / row["direct"]["server_cpu_ms_per_request"]
            )
        rows.append(row)
        d = row["direct"]
        line = (
            f"c={concurrency:>2}  direct {d['rps']:7.1f} req/s p50 {d['p50_ms']:6.2f} ms "
            f"cpu {d['server_cpu_ms_per_request']:.2f} ms/req"
        )
        for name in targets[1:]:
            r = row[name]
            line += (
                f" | {name} {r['rps']:7.1f} req/s p50 {r['p50_ms']:6.2f} p95 {r['p95_ms']:6.2f} ms "
                f"cpu {r['server_cpu_ms_per_request']:.2f} ms/req"
            )
        print(line)
    for name, (count, distinct) in logged.items():
        print(f"{name}: audit rows {count}, distinct request ids {distinct} / requests sent {sent}")
    load_after = load_average()
    print(
        f"detector {detector}; proxy batching {batching or 'ServerConfig defaults'}; load average (1, 5, 15 min) before {load_before}, after {load_after}"
    )
    if busy:
        print("!! the machine was busy at the start: timings are upper bounds, ratios hold better")
    stream = []
    for check_every in (16, 64, 256):
        for holdback in (0, 16):
            r = asyncio.run(stream_tradeoff(check_every, holdback, chunk_chars=4, chunk_delay_s=0.01))
            stream.append(r)
            print(
                f"stream every={check_every:>3} holdback={holdback:>2}: TTFT {r['ttft_ms']:6.1f} ms, leaked {r['leaked_chars']} chars"
            )
    result = {
        "machine": {
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_avg_1m": [load_before[0], load_after[0]],
            "load_avg_before": load_before,
            "load_avg_after": load_after,
            "busy_at_start": busy,
        },
        **detector,
        **({"detector_latency": latency} if latency else {}),
        "upstream": "FastAPI + uvicorn in its own process on 127.0.0.1, constant answer",
        "proxy": "`seawall guard serve` in its own process; load client (httpx) in the bench process",
        "audit_synchronous": args.audit_synchronous,
        # The proxy's effective micro-batching (the baseline runs with its own source tree's behaviour).
        "batching": {
            key: batching.get(key, ServerConfig.model_fields[key].default)
            for key in ("batch_wait_ms", "max_batch", "max_inflight_batches")
        },
        "requests_per_round": args.requests,
        "rounds": args.rounds,
        "baseline_src": str(args.baseline_src) if args.baseline_src else None,
        "decisions_logged": {name: count for name, (count, _) in logged.items()},
        "distinct_request_ids_logged": {name: distinct for name, (_, distinct) in logged.items()},
        "requests_sent": sent,
        "stream_simulation": {"chunk_chars": 4, "chunk_delay_ms": 10, "window": 512},
        "load": rows,
        "stream_tradeoff": stream,
        "median_overhead_ratio": statistics.median(r["overhead_p50_ratio"] for r in rows),
    }
    atomic_write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
