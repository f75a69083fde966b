"""Micro-batching of concurrent detector calls: through the real proxy on loopback, and on the library `Guard`."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from guard_helpers import UNSAFE_WORD, answer_for, proxy

from seawall.guard.config import DEFAULT_REFUSAL, Policy, ServerConfig
from seawall.guard.guard import Guard

REQUESTS = 16
# Wide enough that requests sent together still meet in one batch on a loaded machine.
WAIT_MS = 100.0


def text_score(response: str) -> float:
    """P(unsafe) of one response on its own: 0.95 with the unsafe word, else a value set by its length (< 0.5),
    so a score handed to the wrong check of a batch shows."""
    return 0.95 if UNSAFE_WORD in response else (len(response) % 45) / 100


class RecordingDetector:
    """Implements the detector contract, scoring each pair by `text_score`; records the size of every call and
    the most calls that ran at once."""

    threshold_ = 0.5
    detector_id = "recording-test-1"

    def __init__(self, delay_s: float = 0.0, fail: bool = False) -> None:
        self.delay_s, self.fail = delay_s, fail
        self.sizes: list[int] = []
        self.running = self.peak_running = 0
        self._lock = threading.Lock()

    def predict_proba(self, pairs):
        with self._lock:
            self.sizes.append(len(pairs))
            self.running += 1
            self.peak_running = max(self.peak_running, self.running)
        try:
            self.pause()
            if self.fail:
                raise RuntimeError("detector exploded")
            p = np.array([text_score(response) for _, response in pairs])
            return np.stack([1 - p, p], axis=1)
        finally:
            with self._lock:
                self.running -= 1

    def pause(self) -> None:
        """The time one call takes."""
        time.sleep(self.delay_s)

    def predict_category(self, pairs, scores, threshold):
        return ["Physical harm" if score >= threshold else None for score in scores]


# A hung call of HangingDetector returns after this long at the latest, so no test leaves a thread behind for ever.
HANG_LIMIT_S = 30.0


class HangingDetector(RecordingDetector):
    """A RecordingDetector whose calls made while `hanging` is true hang until `release` is set (each counted in
    `hung_calls`); `started` is set by every call."""

    def __init__(self) -> None:
        super().__init__()
        self.hanging = True
        self.hung_calls = 0
        self.started, self.release = threading.Event(), threading.Event()

    def pause(self) -> None:
        self.started.set()
        if self.hanging:
            with self._lock:
                self.hung_calls += 1
            self.release.wait(HANG_LIMIT_S)


def request_content(i: int) -> str:
    """Request i's prompt: every third asks for unsafe text; lengths differ, so scores differ."""
    if i % 3 == 0:
        return f"say:Step {i}: connect the {UNSAFE_WORD} to the charge."
    return f"say:Request {i}: the weather today is" + " mild" * i + "."


def chat(content: str, stream: bool = False) -> dict:
    return {"model": "up", "messages": [{"role": "user", "content": content}], "stream": stream}


async def one_request(client: httpx.AsyncClient, url: str, content: str, stream: bool) -> tuple[str, str]:
    """(request id, text the client received) of one chat completion, streamed or not."""
    if not stream:
        response = await client.post(f"{url}/v1/chat/completions", json=chat(content))
        assert response.status_code == 200, response.text
        return response.headers["x-request-id"], response.json()["choices"][0]["message"]["content"]
    text = ""
    async with client.stream(
        "POST", f"{url}/v1/chat/completions", json=chat(content, stream=True)
    ) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                text += (choices[0].get("delta") or {}).get("content") or ""
        return response.headers["x-request-id"], text


def send_together(url: str, contents: list[str], streamed: list[bool]) -> list[tuple[str, str]]:
    """Send every request at once; (request id, received text) of each, in order."""

    async def run() -> list[tuple[str, str]]:
        limits = httpx.Limits(max_connections=len(contents))
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            return await asyncio.gather(
                *(one_request(client, url, c, s) for c, s in zip(contents, streamed, strict=True))
            )

    return asyncio.run(run())


def decisions(db: str) -> dict[str, sqlite3.Row]:
    """Audit rows by request id; a request id written twice fails the test."""
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    rows = conn.execute("SELECT * FROM decisions").fetchall()
    conn.close()
    by_id = {row["request_id"]: row for row in rows}
    assert len(by_id) == len(rows), "a decision was logged twice"
    return by_id


def abandoned_metric(metrics: str) -> int:
    """seawall_detector_batches_abandoned_total in a /metrics body (absent: none yet)."""
    found = re.search(r"^seawall_detector_batches_abandoned_total (\S+)$", metrics, re.M)
    return int(float(found.group(1))) if found else 0


def batch_metric(metrics: str) -> tuple[int, float]:
    """(count, sum) of the seawall_detector_batch_pairs histogram in a /metrics body."""
    count = re.search(r"^seawall_detector_batch_pairs_count (\S+)$", metrics, re.M)
    total = re.search(r"^seawall_detector_batch_pairs_sum (\S+)$", metrics, re.M)
    assert count and total, metrics
    return int(count.group(1)), float(total.group(1))


def run_mixed_load(tmp_path, upstream_url: str, batch_wait_ms: float) -> tuple[dict, RecordingDetector, str]:
    """REQUESTS concurrent chat completions (every other one streamed) through a proxy; what each got and how
    its decision was logged, keyed by request content; the detector; the /metrics body."""
    detector = RecordingDetector()
    contents = [request_content(i) for i in range(REQUESTS)]
    streamed = [i % 2 == 1 for i in range(REQUESTS)]
    small_windows = {"stream": {"check_every": 16, "window": 64, "holdback": 8}}
    with proxy(
        tmp_path, upstream_url + "/v1", detector=detector, policy=small_windows, batch_wait_ms=batch_wait_ms
    ) as (url, db, _):
        answers = send_together(url, contents, streamed)
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    rows = decisions(db)
    assert set(rows) == {rid for rid, _ in answers}  # every request logged once, nothing else logged
    outcome = {
        content: (text, rows[rid]["action"], rows[rid]["score"], rows[rid]["category"], rows[rid]["error"])
        for content, (rid, text) in zip(contents, answers, strict=True)
    }
    return outcome, detector, metrics


def test_concurrent_requests_share_detector_calls_with_the_unbatched_decisions(tmp_path, upstream_url):
    batched, batched_detector, metrics = run_mixed_load(tmp_path / "batched", upstream_url, WAIT_MS)
    alone, alone_detector, _ = run_mixed_load(tmp_path / "alone", upstream_url, 0.0)
    assert batched == alone  # same text released, same action, score and category for every request
    for content, (text, action, _, category, error) in batched.items():
        unsafe = UNSAFE_WORD in content
        assert error is None and action == ("block" if unsafe else "allow")
        assert (category == "Physical harm") == unsafe
        assert text.endswith(DEFAULT_REFUSAL) if unsafe else text == answer_for(content)
    # The same pairs were scored (streamed windows included), in fewer calls.
    assert sum(batched_detector.sizes) == sum(alone_detector.sizes)
    assert len(batched_detector.sizes) < len(alone_detector.sizes)
    assert max(batched_detector.sizes) > 1
    assert batch_metric(metrics) == (len(batched_detector.sizes), sum(batched_detector.sizes))


@pytest.mark.parametrize("fail_open", [False, True])
def test_a_failing_batch_call_fails_every_check_in_it_by_the_policy(tmp_path, upstream_url, fail_open):
    detector = RecordingDetector(delay_s=0.05, fail=True)
    contents = [request_content(i) for i in range(8)]
    with proxy(
        tmp_path,
        upstream_url + "/v1",
        detector=detector,
        policy={"fail_open": fail_open},
        batch_wait_ms=WAIT_MS,
    ) as (url, db, _):
        answers = send_together(url, contents, [False] * len(contents))
    assert len(detector.sizes) < len(contents)  # the checks shared calls, and each call failed
    rows = decisions(db)
    assert set(rows) == {rid for rid, _ in answers}
    for content, (rid, text) in zip(contents, answers, strict=True):
        row = rows[rid]
        assert "detector exploded" in row["error"] and row["score"] is None
        if fail_open:
            assert row["action"] == "allow" and text == answer_for(content)
        else:
            assert row["action"] == "block" and text == DEFAULT_REFUSAL


def test_batch_wait_zero_scores_each_check_on_its_own(tmp_path, upstream_url):
    detector = RecordingDetector(delay_s=0.02)
    contents = [request_content(i) for i in range(8)]
    with proxy(tmp_path, upstream_url + "/v1", detector=detector, batch_wait_ms=0) as (url, db, _):
        answers = send_together(url, contents, [False] * len(contents))
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
    assert detector.sizes == [1] * len(contents)
    assert batch_metric(metrics) == (len(contents), len(contents))
    assert set(decisions(db)) == {rid for rid, _ in answers}


def test_concurrent_classify_calls_share_detector_calls(tmp_path, upstream_url):
    detector = RecordingDetector()
    responses = [f"reply {i}" + " x" * i for i in range(8)] + [f"the {UNSAFE_WORD} part"]

    async def run(url: str) -> list[dict]:
        async with httpx.AsyncClient(timeout=30) as client:
            answers = await asyncio.gather(
                *(
                    client.post(f"{url}/v1/classify", json={"pairs": [{"prompt": "q", "response": r}]})
                    for r in responses
                )
            )
        return [answer.json()["results"][0] for answer in answers]

    with proxy(tmp_path, upstream_url + "/v1", detector=detector, batch_wait_ms=WAIT_MS) as (url, db, _):
        results = asyncio.run(run(url))
    assert len(detector.sizes) < len(responses) and sum(detector.sizes) == len(responses)
    assert [r["score"] for r in results] == pytest.approx([text_score(r) for r in responses])
    assert [r["action"] for r in results] == ["allow"] * 8 + ["block"]
    assert len(decisions(db)) == len(responses)


def verdict_fields(verdict) -> tuple:
    return verdict.unsafe, verdict.score, verdict.category, verdict.action, verdict.error


def test_library_checks_from_threads_batch_up_to_max_batch(tmp_path):
    responses = [f"answer {i}" + " y" * i for i in range(9)] + [f"use the {UNSAFE_WORD}"]
    plain = Guard(RecordingDetector())
    expected = [verdict_fields(plain.check("q", r)) for r in responses]
    plain.close()
    detector = RecordingDetector()
    guard = Guard(detector).with_batching(WAIT_MS, max_batch=4)
    with ThreadPoolExecutor(len(responses)) as pool:
        got = list(pool.map(lambda r: verdict_fields(guard.check("q", r)), responses))
    guard.close()
    assert got == expected
    assert max(detector.sizes) <= 4 and len(detector.sizes) < len(responses)
    assert sum(detector.sizes) == len(responses)


def test_a_check_that_times_out_while_its_batch_gathers_is_left_out():
    detector = RecordingDetector()
    guard = Guard(detector, Policy(timeout_s=0.05)).with_batching(300, max_batch=32)
    verdict = guard.check("q", "fine")
    assert verdict.action == "block" and "timeout" in verdict.error
    time.sleep(0.4)  # past the batch's close
    assert detector.sizes == []  # nobody waits for it any more: it is not scored
    guard.close()


def test_close_fails_the_checks_still_gathering_closed():
    guard = Guard(RecordingDetector()).with_batching(2000, max_batch=32)
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(guard.check, "q", "fine")
        time.sleep(0.1)
        start = time.perf_counter()
        guard.close()
        verdict = pending.result(timeout=1)
    assert time.perf_counter() - start < 1  # answered at close, not after the 2 s window
    assert verdict.action == "block" and "closed" in verdict.error


def test_batch_wait_must_stay_below_the_detector_time_limit():
    with pytest.raises(ValueError, match="batch_wait_ms 500 is not below"):
        ServerConfig(batch_wait_ms=500, policy=Policy(timeout_s=0.5))
    assert ServerConfig(batch_wait_ms=0).batch_wait_ms == 0


def test_max_inflight_batches_must_be_at_least_one():
    with pytest.raises(ValueError, match="max_inflight_batches"):
        ServerConfig(max_inflight_batches=0)
    assert ServerConfig().max_inflight_batches == 1


def expected_action(content: str) -> str:
    return "block" if UNSAFE_WORD in content else "allow"


@pytest.mark.parametrize("max_inflight", [1, 2])
def test_at_most_max_inflight_batches_run_at_once_and_later_batches_grow(
    tmp_path, upstream_url, max_inflight
):
    detector = RecordingDetector(delay_s=0.05)
    # The upstream answers the first request at once and the others together 0.1 s later: the first check is
    # scored alone, the others arrive in a burst (the upstream echoes `sleep:` prompts, unsafe word included).
    contents = [request_content(0)] + [f"sleep:0.1:{request_content(i)}" for i in range(1, REQUESTS)]
    with proxy(
        tmp_path,
        upstream_url + "/v1",
        detector=detector,
        batch_wait_ms=1,
        max_inflight_batches=max_inflight,
    ) as (url, db, _):
        answers = send_together(url, contents, [False] * REQUESTS)
    assert detector.peak_running <= max_inflight
    assert sum(detector.sizes) == REQUESTS
    # The burst's checks that arrive while a batch is scored gather for the next one.
    assert detector.sizes[0] == 1 and max(detector.sizes[1:], default=0) > 1, detector.sizes
    rows = decisions(db)
    for content, (rid, _) in zip(contents, answers, strict=True):
        assert rows[rid]["error"] is None and rows[rid]["action"] == expected_action(content)


def test_checks_arriving_while_a_batch_is_scored_wait_and_go_as_the_next_batch():
    detector = HangingDetector()
    guard = Guard(detector).with_batching(10, max_batch=32)
    later = [f"later {i}" + " z" * i for i in range(5)] + [f"the {UNSAFE_WORD}"]

    async def run():
        first = asyncio.ensure_future(guard.acheck("q", "first"))
        await asyncio.to_thread(detector.started.wait, HANG_LIMIT_S)
        rest = [asyncio.ensure_future(guard.acheck("q", r)) for r in later]
        await asyncio.sleep(0.3)  # every later check has been submitted and its 10 ms window has long closed
        waited = list(detector.sizes)
        detector.hanging = False
        detector.release.set()
        return waited, await first, await asyncio.gather(*rest)

    waited, first, rest = asyncio.run(run())
    guard.close()
    assert waited == [1]  # while the first call ran, the later checks only gathered
    assert detector.sizes == [1, len(later)] and detector.peak_running == 1
    assert first.error is None and first.action == "allow"
    assert [v.score for v in rest] == pytest.approx([text_score(r) for r in later])
    assert [v.action for v in rest] == ["allow"] * 5 + ["block"]


def test_a_check_given_up_while_queued_behind_a_hung_call_is_never_scored():
    detector = HangingDetector()
    abandoned = []
    # One detector thread: once the hung call's slot is given up, the next batch queues for that thread.
    guard = Guard(detector, Policy(timeout_s=0.3), workers=1).with_batching(
        10, max_batch=32, on_abandoned=lambda: abandoned.append(1)
    )
    hung = guard.check("q", "first")
    queued = guard.check("q", "second")
    for verdict in (hung, queued):
        assert verdict.action == "block" and "timeout" in verdict.error
    detector.hanging = False
    detector.release.set()
    recovered = guard.check("q", "third")  # the thread is free again: scored normally
    guard.close()
    assert recovered.error is None and recovered.score == pytest.approx(text_score("third"))
    assert detector.sizes == [1, 1]  # the hung call and the last: "second" was given up before its turn
    assert (
        abandoned
    )  # the hung call gave its slot up (else "second" had queued in the batcher, also unscored)


def test_a_hung_detector_fails_checks_closed_and_its_slot_goes_to_the_next_batch(tmp_path, upstream_url):
    detector = HangingDetector()
    timeout_s = 1.0
    with proxy(
        tmp_path,
        upstream_url + "/v1",
        detector=detector,
        policy={"timeout_s": timeout_s},
        batch_wait_ms=20,
        max_inflight_batches=1,
    ) as (url, db, _):
        hung_contents = [request_content(i) for i in range(4)]
        start = time.perf_counter()
        hung = send_together(url, hung_contents, [False] * len(hung_contents))
        hung_s = time.perf_counter() - start
        # The detector answers new calls now, but the hung ones never return: only their given-up slots let
        # the next batch through.
        detector.hanging = False
        answered_contents = [request_content(i) for i in range(4, 8)]
        answered = send_together(url, answered_contents, [False] * len(answered_contents))
        metrics = httpx.get(f"{url}/metrics", timeout=10).text
        detector.release.set()  # the hung calls return: their results go to no one
        time.sleep(0.1)
        after = send_together(url, [request_content(9)], [False])
    assert hung_s < timeout_s + 4  # answered by their own time limit, not by the hung detector
    rows = decisions(db)  # one decision per request: the late results of the hung calls wrote none
    assert set(rows) == {rid for rid, _ in hung + answered + after}
    for rid, text in hung:
        assert rows[rid]["action"] == "block" and "timeout" in rows[rid]["error"] and text == DEFAULT_REFUSAL
    for content, (rid, _) in zip([*answered_contents, request_content(9)], answered + after, strict=True):
        assert rows[rid]["error"] is None and rows[rid]["action"] == expected_action(content)
    assert detector.hung_calls >= 1 and abandoned_metric(metrics) == detector.hung_calls
