"""The proxy on the in-process local model (tiny random Llama), the tfidf detector loaded from disk, and the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from guard_helpers import KeywordDetector, proxy
from typer.testing import CliRunner

from seawall.data.records import ResponseRecord
from seawall.detect import load_detector, make_detector
from seawall.errors import SeawallError
from seawall.generation import load_generator
from seawall.generation.tiny import build_tiny_chat_model
from seawall.guard.audit import SQLiteAuditLog, query
from seawall.guard.cli import app
from seawall.guard.config import DEFAULT_REFUSAL, ServerConfig
from seawall.guard.guard import Guard
from seawall.guard.upstream import LocalUpstream


def test_local_model_upstream_stream_and_plain(tmp_path):
    model_dir = build_tiny_chat_model(tmp_path / "tiny")
    generator = load_generator("transformers", model=str(model_dir))
    expected = generator.generate(
        ["hello there"], generator.config.model_copy(update={"max_new_tokens": 16})
    )[0]
    upstream = LocalUpstream(generator, "tiny", max_tokens=16)
    # Random byte-level text never contains a refusal phrase, so a log policy lets it through untouched.
    log_only = {"action": "log"}
    with (
        proxy(tmp_path, None, upstream_obj=upstream, policy=log_only) as (url, _, _),
        httpx.Client(timeout=60) as c,
    ):
        body = {"model": "tiny", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}
        plain = c.post(f"{url}/v1/chat/completions", json=body).json()
        assert plain["choices"][0]["message"]["content"] == expected
        text = ""
        with c.stream("POST", f"{url}/v1/chat/completions", json={**body, "stream": True}) as r:
            for line in r.iter_lines():
                if line.startswith("data: {"):
                    text += (json.loads(line[6:])["choices"][0].get("delta") or {}).get("content") or ""
        assert text == expected


def test_tfidf_detector_from_disk_scores_like_the_library(tmp_path, upstream_url):
    unsafe = [f"Sure, here is how to build a pipe bomb step {i}: buy powder" for i in range(6)]
    safe = [f"I cannot help with that request number {i}, sorry" for i in range(6)]
    records = [
        ResponseRecord(str(i), "how do I make this", text, label, "c", "test", "g", {}, {})
        for i, (text, label) in enumerate([(t, "unsafe") for t in unsafe] + [(t, "safe") for t in safe])
    ]
    folder = make_detector("tfidf").fit(records).save(tmp_path / "det")
    detector = load_detector(folder)
    pairs = [
        {"prompt": "q", "response": "Sure, here is how to build a bomb"},
        {"prompt": "q", "response": "I cannot"},
    ]
    with (
        proxy(tmp_path, upstream_url + "/v1", detector=detector) as (url, _, _),
        httpx.Client(timeout=10) as c,
    ):
        results = c.post(f"{url}/v1/classify", json={"pairs": pairs}).json()["results"]
    expected = detector.predict_proba([(p["prompt"], p["response"]) for p in pairs])[:, 1]
    assert [r["score"] for r in results] == list(expected)
    assert [r["unsafe"] for r in results] == [True, False]
    assert results[0]["detector_id"] == detector.detector_id


def test_cli_log_queries_audit_db(tmp_path, upstream_url):
    with proxy(tmp_path, upstream_url + "/v1") as (url, db, _), httpx.Client(timeout=10) as client:
        pairs = [{"prompt": "q", "response": "fine"}, {"prompt": "q", "response": "detonator"}]
        client.post(f"{url}/v1/classify", json={"pairs": pairs})
    runner = CliRunner()
    result = runner.invoke(app, ["log", "--db", db, "--since", "1h", "--action", "block", "--json"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    assert len(rows) == 1 and rows[0]["action"] == "block" and rows[0]["endpoint"] == "/classify"
    table = runner.invoke(app, ["log", "--db", db])
    assert table.exit_code == 0 and "2 decision(s)" in table.output
    check = runner.invoke(app, ["check", "Sure, here is the plan.", "--detector", "refusal"])
    assert check.exit_code == 0 and json.loads(check.output)["action"] == "block"


def _tfidf_folder(path):
    unsafe = [f"Sure, here is how to build a pipe bomb step {i}: buy powder" for i in range(6)]
    safe = [f"I cannot help with that request number {i}, sorry" for i in range(6)]
    records = [
        ResponseRecord(str(i), "how do I make this", text, label, "c", "test", "g", {}, {})
        for i, (text, label) in enumerate([(t, "unsafe") for t in unsafe] + [(t, "safe") for t in safe])
    ]
    return make_detector("tfidf").fit(records).save(path)


def test_no_detector_is_an_explicit_choice(tmp_path, monkeypatch):
    from seawall.guard import detectors

    missing = tmp_path / "cache" / "detectors" / "default"
    monkeypatch.setattr(detectors, "default_detector_dir", lambda: missing)
    runner = CliRunner()
    for argv in (["serve", "--upstream-url", "http://127.0.0.1:9/v1"], ["check", "Paris"]):
        result = runner.invoke(app, argv)
        assert isinstance(result.exception, SeawallError)
        assert str(result.exception).startswith(detectors.NO_DETECTOR) and str(missing) in str(
            result.exception
        )
    with pytest.raises(SeawallError, match="neither a detector folder nor a no-training backend"):
        detectors.resolve_detector(str(tmp_path / "nope"))
    # Once the default has been trained (here: a tfidf folder in its place) it is used without a flag.
    _tfidf_folder(missing)
    check = runner.invoke(app, ["check", "I cannot help with that request, sorry"])
    assert check.exit_code == 0, check.output
    assert json.loads(check.output)["detector_id"] == load_detector(missing).detector_id


def test_refusal_matcher_only_by_name_and_it_blocks_compliance(tmp_path):
    from seawall.guard.detectors import resolve_detector

    guard = Guard(resolve_detector("refusal"))
    assert guard.check("What is the capital of France?", "Paris").action == "block"
    assert guard.check("How do I build a bomb?", "I can't help with that.").action == "allow"
    guard.close()


@pytest.mark.slow
def test_cli_serve_subprocess(tmp_path, upstream_url):
    folder = _tfidf_folder(tmp_path / "det")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    db = tmp_path / "audit.sqlite"
    src = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1"}
    argv = [sys.executable, "-m", "seawall", "guard", "serve", "--upstream-url", upstream_url + "/v1"]
    argv += ["--detector", str(folder), "--port", str(port), "--audit-db", str(db)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "guard serve did not become healthy"
            try:
                health = httpx.get(f"{url}/healthz", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.2)
        assert health.json()["detector_id"] == load_detector(folder).detector_id
        body = {
            "model": "m",
            "messages": [{"role": "user", "content": "say:Sure, here is how to build a bomb"}],
        }
        answer = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
        assert answer.status_code == 200 and answer.headers["x-seawall-action"] == "block"
        assert answer.json()["choices"][0]["message"]["content"] == DEFAULT_REFUSAL
    finally:
        proc.terminate()
        output = proc.communicate(timeout=30)[0]
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to exit with it.
    assert proc.returncode in (0, -signal.SIGTERM) and "Application shutdown complete" in output, output
    rows = query(db, limit=None)
    assert [r["action"] for r in rows] == ["block"] and rows[0]["request_id"] == answer.headers[
        "x-request-id"
    ]


def test_open_proxy_is_refused_unless_allowed(tmp_path):
    with pytest.raises(ValueError, match="open proxy"):
        ServerConfig(host="0.0.0.0")
    for ok in (
        {"host": "127.0.0.1"},
        {"host": "::1"},
        {"host": "localhost"},
        {"host": "0.0.0.0", "allow_open": True},
        {"host": "0.0.0.0", "api_keys_env": "GUARD_KEYS"},
    ):
        ServerConfig(**ok)
    runner = CliRunner()
    missing = str(tmp_path / "no-detector")
    refused = runner.invoke(
        app, ["serve", "--host", "0.0.0.0", "--upstream-url", "http://127.0.0.1:9/v1", "--detector", missing]
    )
    assert isinstance(refused.exception, SeawallError) and "--allow-open" in str(refused.exception)
    # With the flag, the configuration passes and the next problem (here: no such detector) is reported.
    allowed = runner.invoke(
        app,
        [
            "serve",
            "--host",
            "0.0.0.0",
            "--allow-open",
            "--upstream-url",
            "http://127.0.0.1:9/v1",
            "--detector",
            missing,
        ],
    )
    assert isinstance(allowed.exception, SeawallError) and "neither a detector folder" in str(
        allowed.exception
    )


def test_audit_log_defaults_to_the_cache_not_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("SEAWALL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    config = ServerConfig()
    assert Path(config.audit_target()) == tmp_path / "cache" / "guard" / "audit.sqlite"
    audit = SQLiteAuditLog(Path(config.audit_target()))
    audit.record("r1", Guard(KeywordDetector()).check("q", "fine"), "q", "fine", "/classify")
    audit.close()
    listed = CliRunner().invoke(app, ["log", "--json"])  # no --db: the same default
    assert listed.exit_code == 0, listed.output
    assert [json.loads(line)["endpoint"] for line in listed.output.splitlines()] == ["/classify"]
    assert not list(tmp_path.glob("*.sqlite"))
