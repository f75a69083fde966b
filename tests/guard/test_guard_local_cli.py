"""The proxy on the in-process local model (tiny random Llama), the tfidf detector loaded from disk, and the CLI."""

from __future__ import annotations

import json

import httpx
from guard_helpers import proxy
from typer.testing import CliRunner

from seawall.data.records import ResponseRecord
from seawall.detect import load_detector, make_detector
from seawall.generation import load_generator
from seawall.generation.tiny import build_tiny_chat_model
from seawall.guard.cli import app
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
    check = runner.invoke(app, ["check", "Sure, here is the plan."])
    assert check.exit_code == 0 and json.loads(check.output)["action"] == "block"
