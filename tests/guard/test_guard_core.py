"""Guard library: verdicts, per-category policy, fail-closed/open, streaming checks, audit log, metrics."""

from __future__ import annotations

import asyncio
import logging
import sqlite3

import pytest
from guard_helpers import BORDERLINE_WORD, UNSAFE_WORD, KeywordDetector
from hypothesis import example, given, settings
from hypothesis import strategies as st

from seawall.errors import SeawallError
from seawall.guard import CategoryRule, Guard, Policy, StreamGuard, StreamPolicy, guard_stream
from seawall.guard.audit import SQLiteAuditLog, parse_since, query, sha256
from seawall.guard.config import ServerConfig
from seawall.guard.metrics import Metrics
from seawall.guard.stream import FieldStreamGuard


def test_verdict_fields_and_default_block():
    guard = Guard(KeywordDetector())
    safe = guard.check("q", "a harmless answer")
    bad = guard.check("q", f"attach the {UNSAFE_WORD}")
    assert (safe.unsafe, safe.action, safe.category) == (False, "allow", None)
    assert (bad.unsafe, bad.action, bad.category) == (True, "block", "Physical harm")
    assert bad.score == pytest.approx(0.9) and bad.threshold == 0.5
    assert bad.detector_id == "keyword-test-1" and bad.latency_ms >= 0 and bad.error is None


def test_per_category_threshold_and_action():
    policy = Policy(action="block", categories={"Physical harm": CategoryRule(action="flag")})
    assert Guard(KeywordDetector(), policy).check("q", UNSAFE_WORD).action == "flag"
    lenient = Policy(categories={"Physical harm": CategoryRule(threshold=0.95)})
    verdict = Guard(KeywordDetector(), lenient).check("q", UNSAFE_WORD)
    assert (verdict.unsafe, verdict.action, verdict.threshold) == (False, "allow", 0.95)
    strict = Policy(threshold=0.05, action="log")
    assert Guard(KeywordDetector(), strict).check("q", "benign").action == "log"


def test_a_stricter_category_rule_fires_below_the_default_threshold():
    # Detectors name a category only for pairs judged unsafe; the guard must ask at the lowest threshold a rule
    # uses, or a rule below the default threshold never sees its category.
    strict = Policy(categories={"Physical harm": CategoryRule(threshold=0.3)})
    verdict = Guard(KeywordDetector(), strict).check("q", f"hide the {BORDERLINE_WORD}")
    assert (verdict.unsafe, verdict.category, verdict.threshold) == (True, "Physical harm", 0.3)
    default = Guard(KeywordDetector()).check("q", f"hide the {BORDERLINE_WORD}")
    assert (default.unsafe, default.category) == (False, None)


def test_fail_closed_on_error_and_timeout(caplog):
    failing = Guard(KeywordDetector(fail=True)).check("q", "benign")
    assert (failing.unsafe, failing.action, failing.score) == (True, "block", None)
    assert "detector exploded" in failing.error
    slow = Guard(KeywordDetector(delay=1.0), Policy(timeout_s=0.05)).check("q", "benign")
    assert slow.action == "block" and "timeout" in slow.error and slow.latency_ms < 900


def test_fail_open_only_when_configured_and_logged(caplog):
    caplog.set_level(logging.WARNING, logger="seawall.guard")
    verdict = Guard(KeywordDetector(fail=True), Policy(fail_open=True)).check("q", UNSAFE_WORD)
    assert (verdict.unsafe, verdict.action) == (False, "allow") and verdict.error
    assert "failing OPEN" in caplog.text


def test_async_check_times_out_without_blocking():
    guard = Guard(KeywordDetector(delay=1.0), Policy(timeout_s=0.05))
    verdict = asyncio.run(guard.acheck("q", "benign"))
    assert verdict.action == "block" and "timeout" in verdict.error


@pytest.mark.parametrize("chunk", [1, 3, 7, 50])
@pytest.mark.parametrize(("every", "holdback"), [(8, 16), (32, 32), (64, 64)])
def test_stream_never_emits_unsafe_text(chunk, every, holdback):
    text = (
        "This is a long and perfectly fine introduction. " * 3 + f"Now wire the {UNSAFE_WORD} to the battery."
    )
    guard = Guard(
        KeywordDetector(), Policy(stream=StreamPolicy(check_every=every, window=128, holdback=holdback))
    )
    pieces = list(guard_stream(guard, "q", (text[i : i + chunk] for i in range(0, len(text), chunk))))
    out = "".join(pieces)
    assert pieces[-1] == guard.policy.refusal
    released = out[: -len(guard.policy.refusal)]
    assert text.startswith(released) and UNSAFE_WORD[:4] not in released[-40:]
    assert UNSAFE_WORD not in released


def test_stream_safe_text_passes_unchanged_and_final_check_runs():
    text = "Paris is the capital of France. " * 5
    guard = Guard(KeywordDetector(), Policy(stream=StreamPolicy(check_every=20, window=40, holdback=10)))
    sg = StreamGuard(guard, "q")
    out = "".join(sg.feed(text[i : i + 4]) for i in range(0, len(text), 4))
    assert len(out) <= len(text) - 10  # the hold-back tail is still withheld
    out += sg.finish()
    assert out == text and sg.verdict.action == "allow" and sg.checks == len(text) // 20 + 1


def test_stream_final_check_catches_what_windows_miss():
    # Windows of 8 characters never see the whole word; the final full check does.
    text = f"xx {UNSAFE_WORD} yy"
    guard = Guard(KeywordDetector(), Policy(stream=StreamPolicy(check_every=4, window=6, holdback=len(text))))
    out = "".join(guard_stream(guard, "q", iter(text)))
    assert out == guard.policy.refusal


FIELD_PIECES = st.lists(
    st.tuples(
        st.sampled_from([("content",), ("reasoning",), ("tool", 0, "arguments")]), st.text("ab c", max_size=9)
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(pieces=FIELD_PIECES, every=st.integers(1, 20), holdback=st.integers(0, 12))
# A field's run fully released, then extended by the next feed (once lost).
@example(pieces=[(("content",), "a")] * 4, every=1, holdback=0)
def test_field_stream_releases_each_field_exactly(pieces, every, holdback):
    guard = Guard(
        KeywordDetector(), Policy(stream=StreamPolicy(check_every=every, window=16, holdback=holdback))
    )
    sg = FieldStreamGuard(guard, "q")
    released: dict = {}

    def collect(out):
        for field, text in out:
            released[field] = released.get(field, "") + text

    for i in range(0, len(pieces), 3):
        collect(asyncio.run(sg.afeed(pieces[i : i + 3])))
    collect(asyncio.run(sg.afinish()))
    expected: dict = {}
    for field, text in pieces:
        if text:
            expected[field] = expected.get(field, "") + text
    assert released == expected and sg.verdict.action == "allow"
    guard.close()


@pytest.mark.parametrize("field", [("reasoning",), ("tool", 0, "arguments")])
def test_field_stream_blocks_unsafe_text_in_any_field_before_it_is_sent(field):
    guard = Guard(KeywordDetector(), Policy(stream=StreamPolicy(check_every=8, window=64, holdback=16)))
    sg = FieldStreamGuard(guard, "q")
    unsafe = f"now attach the {UNSAFE_WORD} to it"
    pieces = [(("content",), "A harmless start. ")] + [
        (field, unsafe[i : i + 3]) for i in range(0, len(unsafe), 3)
    ]
    sent = ""
    for piece in pieces:
        sent += "".join(text for _, text in asyncio.run(sg.afeed([piece])))
        if sg.blocked:
            break
    assert sg.blocked and sg.verdict.action == "block" and UNSAFE_WORD[:4] not in sent
    guard.close()


def test_field_stream_final_check_scores_each_field_alone():
    # This detector fires only on the exact text of one field: the joined text never matches it.
    class SingleFieldDetector(KeywordDetector):
        def predict_proba(self, pairs):
            p = [0.9 if r == "the fuse" else 0.1 for _, r in pairs]
            return [[1 - x, x] for x in p]

    guard = Guard(SingleFieldDetector(), Policy(stream=StreamPolicy(check_every=1000, holdback=0)))
    sg = FieldStreamGuard(guard, "q")
    asyncio.run(sg.afeed([(("content",), "hello"), (("reasoning",), "the fuse")]))
    assert asyncio.run(sg.afinish()) == [] and sg.blocked
    guard.close()


def test_audit_log_wal_one_row_per_decision_and_query(tmp_path):
    db = tmp_path / "a.sqlite"
    audit = SQLiteAuditLog(db)
    verdict = Guard(KeywordDetector()).check("q", UNSAFE_WORD)
    audit.record("r1", verdict, "the prompt", "the response", "/chat/completions", "m")
    audit.record(
        "r2", Guard(KeywordDetector()).check("q", "fine"), "p", "r", "/chat/completions", "m", stream=True
    )
    with pytest.raises(sqlite3.IntegrityError):
        audit.record("r1", verdict, "p", "r", "/chat/completions")
    audit.close()
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = query(db, action="block")
    assert [r["request_id"] for r in rows] == ["r1"]
    assert rows[0]["prompt_sha256"] == sha256("the prompt") and rows[0]["prompt"] is None
    assert rows[0]["category"] == "Physical harm"
    assert len(query(db, since="1h")) == 2 and query(db, since="2999-01-01") == []
    with pytest.raises(SeawallError, match="--since"):
        parse_since("yesterday")
    with pytest.raises(SeawallError, match="does not exist"):
        query(tmp_path / "missing.sqlite")


def test_audit_writer_thread_flushes_queue_on_close_and_async_waits_for_commit(tmp_path):
    db = tmp_path / "a.sqlite"
    audit = SQLiteAuditLog(db, synchronous="FULL")
    verdict = Guard(KeywordDetector()).check("q", "fine")
    pending = [audit.submit(f"r{i}", verdict, "p", "r", "/chat/completions") for i in range(200)]

    async def one() -> int:
        await audit.arecord("async-1", verdict, "p", "r", "/completions")
        # Acknowledged means committed: a separate connection already sees the row.
        return (
            sqlite3.connect(db)
            .execute("SELECT COUNT(*) FROM decisions WHERE request_id='async-1'")
            .fetchone()[0]
        )

    assert asyncio.run(one()) == 1
    audit.close()  # returns only once everything queued is written
    assert all(f.done() and f.exception() is None for f in pending)
    assert sqlite3.connect(db).execute("SELECT COUNT(*) FROM decisions").fetchone()[0] == 201
    with pytest.raises(RuntimeError, match="closed"):
        audit.submit("late", verdict, "p", "r", "/completions")


def test_audit_store_text_opt_in(tmp_path):
    audit = SQLiteAuditLog(tmp_path / "a.sqlite", store_text=True)
    audit.record("r", Guard(KeywordDetector()).check("q", "x"), "p", "resp", "/completions")
    audit.close()
    assert query(tmp_path / "a.sqlite")[0]["response"] == "resp"


def test_metrics_prometheus_text():
    m = Metrics()
    m.inc("seawall_verdicts_total", "block", 'we"ird')
    m.observe_detector(0.003)
    m.observe_detector(7.0)
    text = m.render()
    assert 'seawall_verdicts_total{action="block",category="we\\"ird"} 1' in text
    assert 'seawall_detector_latency_seconds_bucket{le="0.005"} 1' in text
    assert 'seawall_detector_latency_seconds_bucket{le="+Inf"} 2' in text
    assert "# TYPE seawall_detector_latency_seconds histogram" in text


def test_server_config_yaml(tmp_path):
    path = tmp_path / "guard.yaml"
    path.write_text(
        "upstream_url: http://127.0.0.1:9/v1\npolicy:\n  action: flag\n  categories:\n"
        "    Malware/Hacking: {threshold: 0.3, action: block}\n  stream: {check_every: 16}\n"
    )
    config = ServerConfig.from_yaml(path)
    assert config.policy.categories["Malware/Hacking"].threshold == 0.3
    assert config.policy.stream.check_every == 16 and config.host == "127.0.0.1"
    path.write_text("polcy: {}\n")
    with pytest.raises(SeawallError, match="polcy"):
        ServerConfig.from_yaml(path)
