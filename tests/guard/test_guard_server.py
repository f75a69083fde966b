"""The proxy over real HTTP on 127.0.0.1: httpx and the official openai client against a real upstream."""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from guard_helpers import UNSAFE_WORD, KeywordDetector, answer_for, free_dead_url, proxy, serve

from seawall.errors import SeawallError
from seawall.guard import server
from seawall.guard.audit import SQLiteAuditLog
from seawall.guard.config import DEFAULT_REFUSAL, ServerConfig
from seawall.guard.guard import Guard
from seawall.guard.server import build_app, create_app, load_api_keys
from seawall.guard.upstream import HTTPUpstream

SAFE = "say:The capital of France is Paris, a city on the Seine with many museums."
UNSAFE = (
    "say:"
    + "First, gather the parts listed below and prepare the workbench carefully. " * 2
    + (f"Then connect the {UNSAFE_WORD} to the charge and seal it.")
)


def chat(content: str, **extra) -> dict:
    return {"model": "up", "messages": [{"role": "user", "content": content}], **extra}


def read_stream(client: httpx.Client, url: str, body: dict) -> tuple[str, list[dict]]:
    chunks = []
    with client.stream("POST", url, json=body) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    text = "".join(
        (c["choices"][0].get("delta") or {}).get("content") or "" for c in chunks if c.get("choices")
    )
    return text, chunks


def audit_rows(db: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    return conn.execute("SELECT * FROM decisions ORDER BY id").fetchall()


@pytest.fixture(scope="module")
def running(tmp_path_factory, upstream_url):
    with proxy(tmp_path_factory.mktemp("p"), upstream_url + "/v1") as p:
        yield p


def test_safe_passes_unchanged_and_unsafe_is_blocked(running, upstream_url):
    url, db, _ = running
    with httpx.Client(timeout=10) as client:
        direct = client.post(f"{upstream_url}/v1/chat/completions", json=chat(SAFE)).json()
        via = client.post(f"{url}/v1/chat/completions", json=chat(SAFE))
        assert via.status_code == 200 and via.json() == direct
        assert via.headers["x-seawall-action"] == "allow"
        blocked = client.post(f"{url}/v1/chat/completions", json=chat(UNSAFE)).json()
    assert blocked["choices"][0]["message"]["content"] == DEFAULT_REFUSAL
    assert blocked["choices"][0]["finish_reason"] == "content_filter"
    assert blocked["seawall"]["action"] == "block" and blocked["seawall"]["category"] == "Physical harm"
    row = [r for r in audit_rows(db) if r["request_id"] == blocked["seawall"]["request_id"]]
    assert len(row) == 1 and row[0]["action"] == "block" and row[0]["prompt"] is None


def test_streams_safe_whole_and_unsafe_cut_before_unsafe_text(running):
    url, _, _ = running
    with httpx.Client(timeout=10) as client:
        text, _ = read_stream(client, f"{url}/v1/chat/completions", chat(SAFE, stream=True))
        assert text == answer_for(SAFE)
        text, chunks = read_stream(client, f"{url}/v1/chat/completions", chat(UNSAFE, stream=True))
    assert text.endswith(DEFAULT_REFUSAL) and UNSAFE_WORD not in text
    assert answer_for(UNSAFE).startswith(text[: -len(DEFAULT_REFUSAL)])
    assert chunks[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert chunks[-1]["seawall"]["action"] == "block"


def test_official_openai_client(running):
    url, _, _ = running
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    safe = client.chat.completions.create(model="up", messages=[{"role": "user", "content": SAFE}])
    assert safe.choices[0].message.content == answer_for(SAFE)
    bad = client.chat.completions.create(model="up", messages=[{"role": "user", "content": UNSAFE}])
    assert (
        bad.choices[0].message.content == DEFAULT_REFUSAL and bad.choices[0].finish_reason == "content_filter"
    )
    stream = client.chat.completions.create(
        model="up", messages=[{"role": "user", "content": UNSAFE}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert UNSAFE_WORD not in text and text.endswith(DEFAULT_REFUSAL)
    completion = client.completions.create(model="up", prompt=SAFE)
    assert completion.choices[0].text == answer_for(SAFE)
    streamed = "".join(
        c.choices[0].text for c in client.completions.create(model="up", prompt=UNSAFE, stream=True)
    )
    assert UNSAFE_WORD not in streamed and streamed.endswith(DEFAULT_REFUSAL)


def test_classify_health_metrics(running):
    url, _, _ = running
    with httpx.Client(timeout=10) as client:
        pairs = [{"prompt": "q", "response": "fine"}, {"prompt": "q", "response": UNSAFE_WORD}]
        results = client.post(f"{url}/v1/classify", json={"pairs": pairs}).json()["results"]
        assert [r["action"] for r in results] == ["allow", "block"]
        assert client.get(f"{url}/healthz").json()["detector_id"] == "keyword-test-1"
        metrics = client.get(f"{url}/metrics").text
    assert 'seawall_verdicts_total{action="block",category="Physical harm"}' in metrics
    assert 'seawall_requests_total{endpoint="/v1/classify",status="200"}' in metrics
    assert "seawall_detector_latency_seconds_count" in metrics


def test_malformed_requests_name_the_field(tmp_path, upstream_url):
    with proxy(tmp_path, upstream_url + "/v1", max_body_bytes=2000, max_tokens=100) as (url, db, _):
        with httpx.Client(timeout=10) as client:
            post = lambda **kw: client.post(f"{url}/v1/chat/completions", **kw)  # noqa: E731
            bad_json = post(content=b"{not json", headers={"content-type": "application/json"})
            assert bad_json.status_code == 400 and "invalid JSON" in bad_json.json()["error"]["message"]
            missing = post(json={"model": "m"})
            assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"
            wrong = post(json={"model": "m", "messages": [{"role": "user", "content": 5}]})
            assert wrong.status_code == 400 and "messages.0.content" in wrong.json()["error"]["message"]
            too_many = post(json=chat("hi", max_tokens=101))
            assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "max_tokens"
            big = post(json=chat("x" * 5000))
            assert big.status_code == 413 and "2000 bytes" in big.json()["error"]["message"]
            assert post(json=[1, 2]).status_code == 400
            prompt_list = client.post(f"{url}/v1/completions", json={"model": "m", "prompt": ["a", "b"]})
            assert prompt_list.status_code == 400 and prompt_list.json()["error"]["param"] == "prompt"
        assert audit_rows(db) == []


def test_api_keys_accept_only_a_configured_bearer_key(tmp_path, upstream_url, caplog):
    keys = ("sk-good", "sk-other")
    with proxy(tmp_path, upstream_url + "/v1", keys=keys) as (url, _, _), httpx.Client(timeout=10) as client:
        post = lambda h: client.post(f"{url}/v1/chat/completions", json=chat(SAFE), headers=h)  # noqa: E731
        assert post({}).status_code == 401
        assert post({"Authorization": "Bearer sk-bad"}).status_code == 401
        assert post({"Authorization": "Basic sk-good"}).status_code == 401
        assert post({"Authorization": "Bearer sk-other"}).status_code == 200
        assert client.get(f"{url}/healthz").status_code == 200
    assert "sk-bad" not in caplog.text and "sk-good" not in caplog.text


def test_upstream_down_502_and_timeout_504(tmp_path, upstream_url):
    with proxy(tmp_path, free_dead_url()) as (url, _, _), httpx.Client(timeout=10) as client:
        down = client.post(f"{url}/v1/chat/completions", json=chat(SAFE))
        assert down.status_code == 502 and "unreachable" in down.json()["error"]["message"]
        assert client.post(f"{url}/v1/chat/completions", json=chat(SAFE, stream=True)).status_code == 502
        assert 'seawall_upstream_errors_total{kind="unreachable"} 2' in client.get(f"{url}/metrics").text
    with proxy(tmp_path / "t", upstream_url + "/v1", request_timeout_s=0.3) as (url, db, _):
        with httpx.Client(timeout=10) as client:
            slow = client.post(f"{url}/v1/chat/completions", json=chat("sleep:2"))
            assert slow.status_code == 504 and "timed out" in slow.json()["error"]["message"]
        assert audit_rows(db) == []


@pytest.mark.parametrize("stream", [False, True])
def test_fail_closed_when_detector_raises_or_hangs(tmp_path, upstream_url, stream):
    for name, detector, policy in [
        ("raise", KeywordDetector(fail=True), {}),
        ("hang", KeywordDetector(delay=2.0), {"timeout_s": 0.1}),
    ]:
        with proxy(tmp_path / name, upstream_url + "/v1", detector=detector, policy=policy) as (url, db, _):
            with httpx.Client(timeout=10) as client:
                if stream:
                    text, _ = read_stream(client, f"{url}/v1/chat/completions", chat(SAFE, stream=True))
                    assert text == DEFAULT_REFUSAL
                else:
                    body = client.post(f"{url}/v1/chat/completions", json=chat(SAFE)).json()
                    assert body["choices"][0]["message"]["content"] == DEFAULT_REFUSAL
            (row,) = audit_rows(db)
            assert row["action"] == "block" and row["error"] and row["score"] is None


def test_fail_open_only_when_configured(tmp_path, upstream_url):
    policy = {"fail_open": True}
    with proxy(tmp_path, upstream_url + "/v1", detector=KeywordDetector(fail=True), policy=policy) as (
        url,
        db,
        _,
    ):
        with httpx.Client(timeout=10) as client:
            body = client.post(f"{url}/v1/chat/completions", json=chat(UNSAFE)).json()
            assert body["choices"][0]["message"]["content"] == answer_for(UNSAFE)
        (row,) = audit_rows(db)
        assert row["action"] == "allow" and "detector exploded" in row["error"]


def test_flag_policy_attaches_verdict(tmp_path, upstream_url):
    flag = {"action": "flag"}
    with (
        proxy(tmp_path, upstream_url + "/v1", policy=flag) as (url, _, _),
        httpx.Client(timeout=10) as client,
    ):
        body = client.post(f"{url}/v1/chat/completions", json=chat(UNSAFE)).json()
        text, chunks = read_stream(client, f"{url}/v1/chat/completions", chat(UNSAFE, stream=True))
    assert body["choices"][0]["message"]["content"] == answer_for(UNSAFE)
    assert body["seawall"]["action"] == "flag" and body["seawall"]["unsafe"]
    assert text == answer_for(UNSAFE) and chunks[-1]["seawall"]["action"] == "flag"


def test_concurrency_limit_429(tmp_path, upstream_url):
    async def run(url):
        async with httpx.AsyncClient(timeout=10) as client:
            slow = asyncio.create_task(client.post(f"{url}/v1/chat/completions", json=chat("sleep:0.5")))
            await asyncio.sleep(0.2)
            rejected = await client.post(f"{url}/v1/chat/completions", json=chat(SAFE))
            return (await slow).status_code, rejected

    with proxy(tmp_path, upstream_url + "/v1", max_concurrency=1) as (url, _, _):
        first, rejected = asyncio.run(run(url))
    assert first == 200 and rejected.status_code == 429 and rejected.headers["retry-after"] == "1"


def test_64_concurrent_mixed_requests_each_logged_once(tmp_path, upstream_url):
    async def one(client, url, i):
        unsafe, stream = i % 2 == 0, i % 4 < 2
        content = (UNSAFE if unsafe else SAFE) + f" #{i}"
        if stream:
            text = ""
            async with client.stream(
                "POST", f"{url}/v1/chat/completions", json=chat(content, stream=True)
            ) as r:
                rid = r.headers["x-request-id"]
                async for line in r.aiter_lines():
                    if line.startswith("data: {"):
                        choices = json.loads(line[6:])["choices"]
                        text += (choices[0].get("delta") or {}).get("content") or "" if choices else ""
        else:
            r = await client.post(f"{url}/v1/chat/completions", json=chat(content))
            rid, text = r.headers["x-request-id"], r.json()["choices"][0]["message"]["content"]
        expected_ok = (
            text.endswith(DEFAULT_REFUSAL) and UNSAFE_WORD not in text
            if unsafe
            else text == answer_for(content)
        )
        return rid, unsafe, expected_ok

    async def run(url):
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=64)) as client:
            return await asyncio.gather(*(one(client, url, i) for i in range(64)))

    with proxy(tmp_path, upstream_url + "/v1") as (url, db, _):
        results = asyncio.run(run(url))
    assert all(ok for _, _, ok in results)
    rows = {r["request_id"]: r for r in audit_rows(db)}
    assert len(rows) == 64 and set(rows) == {rid for rid, _, _ in results}
    assert all(rows[rid]["action"] == ("block" if unsafe else "allow") for rid, unsafe, _ in results)


def test_upstream_failure_mid_stream_is_audited(tmp_path, upstream_url):
    small_checks = {"stream": {"check_every": 4, "window": 64, "holdback": 0}}
    with proxy(tmp_path, upstream_url + "/v1", policy=small_checks) as (url, db, _):
        with httpx.Client(timeout=10) as client:
            text, chunks = read_stream(
                client, f"{url}/v1/chat/completions", chat("die: then more text", stream=True)
            )
            metrics = client.get(f"{url}/metrics").text
        # Two checked chunks reached the client before the upstream died.
        assert text and answer_for("die: then more text").startswith(text)
        assert "error" in chunks[-1] and chunks[-1]["error"]["type"] == "upstream_error"
        (row,) = audit_rows(db)
        assert row["action"] == "upstream_error" and row["stream"] == 1
        assert "upstream" in row["error"] and row["score"] is not None  # the checks that ran are on record
    assert 'seawall_verdicts_total{action="upstream_error",category="none"} 1' in metrics
    assert 'seawall_upstream_errors_total{kind="unreachable"} 1' in metrics


def test_protect_metrics_requires_a_key_healthz_stays_open(tmp_path, upstream_url):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("sk-good\n")
    extra = {"protect_metrics": True, "api_keys_file": str(keys_file)}
    with (
        proxy(tmp_path, upstream_url + "/v1", keys=("sk-good",), **extra) as (url, _, _),
        httpx.Client(timeout=10) as client,
    ):
        assert client.get(f"{url}/metrics").status_code == 401
        bad = client.get(f"{url}/metrics", headers={"Authorization": "Bearer sk-bad"})
        assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"
        good = client.get(f"{url}/metrics", headers={"Authorization": "Bearer sk-good"})
        assert good.status_code == 200 and "seawall_requests_total" in good.text
        assert client.get(f"{url}/healthz").status_code == 200
    with (
        proxy(tmp_path / "open", upstream_url + "/v1", keys=("sk-good",)) as (url, _, _),
        httpx.Client(timeout=10) as client,
    ):
        assert client.get(f"{url}/metrics").status_code == 200  # default: open
    with pytest.raises(ValueError, match="protect_metrics needs API keys"):
        ServerConfig(protect_metrics=True)


def test_client_disconnect_mid_stream_is_audited(tmp_path, upstream_url):
    small_checks = {"stream": {"check_every": 4, "window": 64, "holdback": 0}}
    with proxy(tmp_path, upstream_url + "/v1", policy=small_checks) as (url, db, _):
        with httpx.Client(timeout=10) as client:
            body = chat("slow:" + "a harmless sentence that goes on " * 4, stream=True)
            with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                rid = response.headers["x-request-id"]
                next(line for line in response.iter_lines() if '"content"' in line)
        deadline = time.time() + 5
        while not audit_rows(db) and time.time() < deadline:
            time.sleep(0.05)
        (row,) = audit_rows(db)
    assert row["request_id"] == rid and row["action"] == "client_disconnect"


def test_api_key_check_compares_every_key_in_constant_time(tmp_path, upstream_url, monkeypatch):
    # The check must go through hmac.compare_digest for every configured key, matched or not (no early exit).
    compared = []
    compare_digest = hmac.compare_digest

    def recording_compare_digest(a, b):
        compared.append((a, b))
        return compare_digest(a, b)

    monkeypatch.setattr(server.hmac, "compare_digest", recording_compare_digest)
    keys = ("sk-first", "sk-second", "sk-third")
    with proxy(tmp_path, upstream_url + "/v1", keys=keys) as (url, _, _), httpx.Client(timeout=10) as client:
        for presented, status in (("sk-first", 200), ("sk-nope", 401)):
            compared.clear()
            response = client.post(
                f"{url}/v1/chat/completions",
                json=chat(SAFE),
                headers={"Authorization": f"Bearer {presented}"},
            )
            assert response.status_code == status
            assert compared == [(presented.encode(), k.encode()) for k in keys]


def test_keys_file_comments_may_be_indented(tmp_path):
    keys_file = tmp_path / "keys.txt"
    keys_file.write_text("sk-one\n  # an indented comment\n\t# another\n  sk-two  \n")
    assert load_api_keys(ServerConfig(api_keys_file=str(keys_file))) == [b"sk-one", b"sk-two"]


def test_missing_upstream_key_variable_is_an_error(tmp_path, monkeypatch):
    monkeypatch.delenv("SEAWALL_TEST_UPSTREAM_KEY", raising=False)
    config = ServerConfig(
        upstream_url=free_dead_url(),
        upstream_api_key_env="SEAWALL_TEST_UPSTREAM_KEY",
        detector="refusal",
        audit_db=str(tmp_path / "audit.sqlite"),
    )
    with pytest.raises(SeawallError, match="SEAWALL_TEST_UPSTREAM_KEY is not set"):
        build_app(config)


def test_shutdown_closes_the_guard(tmp_path, upstream_url):
    config = ServerConfig(upstream_url=upstream_url + "/v1", audit_db=str(tmp_path / "audit.sqlite"))
    guard = Guard(KeywordDetector(), config.policy)
    app = create_app(config, guard, HTTPUpstream(config.upstream_url), SQLiteAuditLog(config.audit_db), [])
    with serve(app) as url:
        assert httpx.post(f"{url}/v1/chat/completions", json=chat(SAFE), timeout=10).status_code == 200
    after = guard.check("q", "fine")
    assert after.action == "block" and "closed" in after.error  # its threads are gone: fails closed


HUNG_DETECTOR_SERVER = """
import sys, httpx
sys.path.insert(0, {tests!r})
from guard_helpers import KeywordDetector, proxy, serve, upstream_app
from pathlib import Path
with serve(upstream_app()) as upstream:
    hung = KeywordDetector(delay=60.0)
    with proxy(Path({tmp!r}), upstream + "/v1", detector=hung, policy={{"timeout_s": 0.1}}) as (url, _, _):
        body = {{"model": "m", "messages": [{{"role": "user", "content": "say:hello"}}]}}
        answer = httpx.post(url + "/v1/chat/completions", json=body, timeout=10).json()
        print(answer["seawall"]["error"], flush=True)
print("exiting", flush=True)
"""


def test_process_exits_despite_a_hung_detector(tmp_path):
    script = HUNG_DETECTOR_SERVER.format(tests=str(Path(__file__).parent), tmp=str(tmp_path))
    src = str(Path(__file__).resolve().parents[2] / "src")
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": src},
        capture_output=True,
        text=True,
        timeout=30,  # the detector hangs for 60 s: only a process that does not wait for it gets here
    )
    assert done.returncode == 0, done.stderr
    assert "detector timeout after 0.1s" in done.stdout and "exiting" in done.stdout
    assert time.perf_counter() - start < 30


def test_audit_failure_on_client_disconnect_is_logged_and_counted(tmp_path, upstream_url, caplog):
    small_checks = {"stream": {"check_every": 4, "window": 64, "holdback": 0}}
    with proxy(tmp_path, upstream_url + "/v1", policy=small_checks) as (url, db, _):
        # A real SQLite failure for exactly this kind of decision.
        conn = sqlite3.connect(db)
        conn.execute(
            "CREATE TRIGGER refuse BEFORE INSERT ON decisions WHEN NEW.action = 'client_disconnect' "
            "BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
        )
        conn.commit()
        conn.close()
        with httpx.Client(timeout=10) as client:
            body = chat("slow:" + "a harmless sentence that goes on " * 4, stream=True)
            with client.stream("POST", f"{url}/v1/chat/completions", json=body) as response:
                rid = response.headers["x-request-id"]
                next(line for line in response.iter_lines() if '"content"' in line)
            deadline = time.time() + 5
            while "seawall_audit_failures_total 1" not in (metrics := client.get(f"{url}/metrics").text):
                assert time.time() < deadline, metrics
                time.sleep(0.05)
    assert audit_rows(db) == []
    assert f"audit log write failed for {rid}" in caplog.text and "disk says no" in caplog.text


def refuse_inserts(db: str) -> None:
    """A real SQLite failure for every decision (the database refuses the insert)."""
    conn = sqlite3.connect(db)
    conn.execute(
        "CREATE TRIGGER refuse BEFORE INSERT ON decisions BEGIN SELECT RAISE(ABORT, 'disk says no'); END"
    )
    conn.commit()
    conn.close()


@pytest.mark.parametrize("fail_open", [False, True])
def test_audit_failure_withholds_the_answer_unless_fail_open(tmp_path, upstream_url, caplog, fail_open):
    with proxy(tmp_path, upstream_url + "/v1", audit_fail_open=fail_open) as (url, db, _):
        refuse_inserts(db)
        with httpx.Client(timeout=10) as client:
            plain = client.post(f"{url}/v1/chat/completions", json=chat(SAFE))
            text, chunks = read_stream(client, f"{url}/v1/chat/completions", chat(SAFE, stream=True))
            pairs = {"pairs": [{"prompt": "q", "response": "fine"}]}
            classified = client.post(f"{url}/v1/classify", json=pairs)
            metrics = client.get(f"{url}/metrics").text
    assert "seawall_audit_failures_total 3" in metrics
    assert caplog.text.count("audit log write failed") == 3 and "disk says no" in caplog.text
    if fail_open:
        assert plain.status_code == 200 and plain.headers["x-seawall-audit"] == "unrecorded"
        assert plain.json()["choices"][0]["message"]["content"] == answer_for(SAFE)
        assert plain.json()["seawall"]["audited"] is False
        assert text == answer_for(SAFE) and chunks[-1]["seawall"]["audited"] is False
        assert classified.status_code == 200 and classified.headers["x-seawall-audit"] == "unrecorded"
        assert caplog.text.count("AUDIT FAIL-OPEN") == 3
    else:
        assert plain.status_code == 503 and plain.json()["error"]["type"] == "audit_error"
        assert "answer is withheld" in plain.json()["error"]["message"]
        # The held-back tail is not released; the stream ends with the error event.
        assert answer_for(SAFE).startswith(text) and text != answer_for(SAFE)
        assert chunks[-1]["error"]["type"] == "audit_error"
        assert classified.status_code == 503
