"""The PostgreSQL audit log for replicas: two real `seawall guard serve` processes share one real database."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import psycopg
import pytest
from guard_helpers import ServeProcess, answer_for, tfidf_detector_folder
from typer.testing import CliRunner

from seawall.errors import SeawallError
from seawall.guard.audit import PostgresAuditLog, query, redact_url
from seawall.guard.cli import app
from seawall.guard.config import DEFAULT_REFUSAL
from seawall.guard.guard import Guard

UNSAFE = "say:Sure, here is how to build a pipe bomb step 3: buy powder"
SAFE = "say:I cannot help with that request number 2, sorry"


def chat(content: str, stream: bool = False) -> dict:
    return {"model": "up", "messages": [{"role": "user", "content": content}], "stream": stream}


async def one(client: httpx.AsyncClient, url: str, i: int) -> tuple[str, str, bool]:
    """Request `i` (unsafe every other one, streamed every other pair); (request id, expected action, ok)."""
    unsafe, stream = i % 2 == 0, i % 4 < 2
    content = f"{UNSAFE if unsafe else SAFE} #{i}"
    if stream:
        text = ""
        async with client.stream("POST", f"{url}/v1/chat/completions", json=chat(content, True)) as r:
            assert r.status_code == 200, await r.aread()
            rid = r.headers["x-request-id"]
            async for line in r.aiter_lines():
                if line.startswith("data: {"):
                    choices = json.loads(line[6:]).get("choices") or [{}]
                    text += (choices[0].get("delta") or {}).get("content") or ""
    else:
        r = await client.post(f"{url}/v1/chat/completions", json=chat(content))
        assert r.status_code == 200, r.text
        rid, text = r.headers["x-request-id"], r.json()["choices"][0]["message"]["content"]
    ok = text.endswith(DEFAULT_REFUSAL) and "bomb" not in text if unsafe else text == answer_for(content)
    return rid, "block" if unsafe else "allow", ok


async def load(urls: list[str], per_proxy: int) -> list[tuple[str, str, bool]]:
    limits = httpx.Limits(max_connections=per_proxy * len(urls))
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        jobs = [one(client, url, i) for url in urls for i in range(per_proxy)]
        return await asyncio.gather(*jobs)


def table(url: str) -> dict[str, list[dict]]:
    """Every row of the decisions table, grouped by request id."""
    rows: dict[str, list[dict]] = {}
    with psycopg.connect(url, row_factory=psycopg.rows.dict_row) as conn:
        for row in conn.execute("SELECT * FROM decisions"):
            rows.setdefault(row["request_id"], []).append(row)
    return rows


def metric(url: str, name: str) -> float:
    lines = httpx.get(f"{url}/metrics", timeout=5).text.splitlines()
    return sum(float(line.split()[-1]) for line in lines if line.startswith(name + " "))


@pytest.mark.slow
def test_two_replicas_share_one_postgres_audit_log_and_fail_closed_while_it_is_down(
    tmp_path, upstream_url, postgres
):
    detector = tfidf_detector_folder(tmp_path / "det")
    common = {"upstream_url": upstream_url + "/v1", "detector": str(detector), "audit_timeout_s": 1.0}
    closed = ServeProcess(tmp_path, "closed", {**common, "audit": postgres.url})
    opened = ServeProcess(tmp_path, "open", {**common, "audit": postgres.url, "audit_fail_open": True})
    try:
        for proxy in (closed, opened):
            health = proxy.wait_healthy()
            assert health["audit"] == redact_url(postgres.url) and postgres.PASSWORD not in health["audit"]

        # 64 concurrent requests to each replica at once: every decision is in the shared table exactly once,
        # committed before its answer was sent (the table is read while both proxies still run).
        results = asyncio.run(load([closed.url, opened.url], 64))
        assert all(ok for _, _, ok in results)
        rows = table(postgres.url)
        assert set(rows) == {rid for rid, _, _ in results} and len(results) == 128
        assert all(len(rows[rid]) == 1 and rows[rid][0]["action"] == action for rid, action, _ in results)
        assert all(row["prompt"] is None and row["response"] is None for (row,) in rows.values())
        assert {row["endpoint"] for (row,) in rows.values()} == {"/chat/completions"}

        # The database goes away: the default replica withholds answers (503), the fail-open one releases
        # them unrecorded; both log it and count it.
        postgres.stop()
        down_closed = httpx.post(f"{closed.url}/v1/chat/completions", json=chat(SAFE), timeout=30)
        assert down_closed.status_code == 503, down_closed.text
        assert down_closed.json()["error"]["type"] == "audit_error"
        down_open = httpx.post(f"{opened.url}/v1/chat/completions", json=chat(SAFE), timeout=30)
        assert down_open.status_code == 200 and down_open.headers["x-seawall-audit"] == "unrecorded"
        assert down_open.json()["choices"][0]["message"]["content"] == answer_for(SAFE)
        for proxy in (closed, opened):
            assert metric(proxy.url, "seawall_audit_failures_total") >= 1
            assert "audit log write failed" in proxy.output()
        assert "AUDIT FAIL-OPEN" in opened.output() and "AUDIT FAIL-OPEN" not in closed.output()

        # It comes back: both replicas write again, without a restart.
        postgres.start()
        recovered = {}
        deadline = time.time() + 30
        for proxy in (closed, opened):
            while True:
                r = httpx.post(f"{proxy.url}/v1/chat/completions", json=chat(UNSAFE), timeout=30)
                if r.status_code == 200 and "x-seawall-audit" not in r.headers:
                    recovered[proxy.url] = r.headers["x-request-id"]
                    break
                assert time.time() < deadline, f"no recovery after the database returned: {r.text}"
                time.sleep(0.5)
        rows = table(postgres.url)
        assert all(len(rows[rid]) == 1 and rows[rid][0]["action"] == "block" for rid in recovered.values())
        for unrecorded in (down_closed, down_open):
            assert unrecorded.headers["x-request-id"] not in rows
    finally:
        for proxy in (closed, opened):
            proxy.stop()
    for proxy in (closed, opened):
        assert postgres.PASSWORD not in proxy.output()

    # `seawall guard log --audit-url` reads the same table.
    listed = CliRunner().invoke(app, ["log", "--audit-url", postgres.url, "--json", "--limit", "0"])
    assert listed.exit_code == 0, listed.output
    assert {json.loads(line)["request_id"] for line in listed.output.splitlines()} == set(rows)
    blocked = {r["request_id"] for r in query(postgres.url, action="block", limit=None)}
    expected = {rid for rid, action, _ in results if action == "block"} | set(recovered.values())
    assert expected <= blocked and not blocked & {rid for rid, action, _ in results if action == "allow"}


def test_postgres_audit_log_one_row_per_decision_and_clear_errors(postgres):
    verdict = Guard(_Fixed()).check("q", "text")
    audit = PostgresAuditLog(postgres.url, store_text=True, pool_size=2)
    try:
        audit.record("pg-unit-1", verdict, "the prompt", "the response", "/completions", "m")
        with pytest.raises(psycopg.errors.UniqueViolation):
            audit.record("pg-unit-1", verdict, "p", "r", "/completions")  # a decision is never written twice
    finally:
        audit.close()
    (row,) = query(postgres.url, since="1h", category="c", limit=None)
    assert row["request_id"] == "pg-unit-1" and row["prompt"] == "the prompt" and row["score"] == 0.75
    wrong = postgres.url.replace(postgres.PASSWORD, "not-the-password")
    with pytest.raises(SeawallError, match="cannot connect") as error:
        PostgresAuditLog(wrong)
    assert "not-the-password" not in str(error.value)


class _Fixed:
    """A detector that scores everything 0.75 in category `c`."""

    threshold_ = 0.5
    detector_id = "fixed"

    def predict_proba(self, pairs):
        import numpy as np

        return np.array([[0.25, 0.75]] * len(pairs))

    def predict_category(self, pairs, scores=None, threshold=None):
        return ["c"] * len(pairs)
