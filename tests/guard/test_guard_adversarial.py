"""The proxy against an adversarial upstream: every field an OpenAI-compatible server may return is checked,
released only when checked, or dropped; plus fuzzed request bodies from the app's own OpenAPI schema.

The upstream is a real server on 127.0.0.1 that answers what each request scripts in `x_upstream` (the proxy
forwards unknown fields), so every test decides the upstream's exact answer, streamed or not.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3

import httpx
import openai
import pytest
import schemathesis
from guard_helpers import UNSAFE_WORD, KeywordDetector, proxy, scripted_upstream_app, serve
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.core import NOT_SET

from seawall.guard.config import DEFAULT_REFUSAL

SAFE = "The capital of France is Paris, a city on the Seine."
UNSAFE = f"First seal the case. Then connect the {UNSAFE_WORD} to the charge."


@pytest.fixture(scope="module")
def scripted():
    app = scripted_upstream_app()
    with serve(app) as url:
        yield url + "/v1", app


@pytest.fixture(scope="module")
def running(tmp_path_factory, scripted):
    with proxy(tmp_path_factory.mktemp("adv"), scripted[0]) as p:
        yield p


def answer(message: dict | None = None, choices: list | None = None, **top) -> dict:
    """A chat completion whose first choice carries `message` (role assistant added)."""
    first = {"index": 0, "message": {"role": "assistant", **(message or {})}, "finish_reason": "stop"}
    return {
        "id": "up-1",
        "object": "chat.completion",
        "created": 1,
        "model": "up",
        "choices": choices or [first],
        **top,
    }


def ask(content: str = "hi", **extra) -> dict:
    return {"model": "up", "messages": [{"role": "user", "content": content}], **extra}


def rows(db: str, request_id: str) -> list[sqlite3.Row]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    return conn.execute("SELECT * FROM decisions WHERE request_id = ?", (request_id,)).fetchall()


def sse(response: httpx.Response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.text.splitlines() if line.startswith("data: {")]


def tool_call(name: str, arguments: str, call_id: str = "call_1") -> dict:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def token_logprobs(text: str, alternatives: str | None = None) -> list[dict]:
    """Logprob entries whose tokens spell `text` (5 characters each), optionally with alternative tokens."""
    tops = [{"token": alternatives, "logprob": -2.0, "bytes": None}] if alternatives else []
    return [
        {
            "token": text[i : i + 5],
            "logprob": -0.1,
            "bytes": list(text[i : i + 5].encode()),
            "top_logprobs": tops,
        }
        for i in range(0, len(text), 5)
    ]


# Where an upstream may put text besides message.content; each holds the unsafe text, content stays safe.
CHECKED_FIELDS = {
    "tool_call_arguments": {"content": None, "tool_calls": [tool_call("run", json.dumps({"step": UNSAFE}))]},
    "tool_call_name": {"content": None, "tool_calls": [tool_call(UNSAFE, "{}")]},
    "reasoning_content": {"content": SAFE, "reasoning_content": UNSAFE},
    "reasoning": {"content": SAFE, "reasoning": UNSAFE},
    "refusal": {"content": None, "refusal": UNSAFE},
    "audio_transcript": {
        "content": None,
        "audio": {"id": "audio_1", "data": "UklGRg==", "expires_at": 1, "transcript": UNSAFE},
    },
    "function_call": {"content": None, "function_call": {"name": "run", "arguments": UNSAFE}},
    "second_tool_call": {
        "content": SAFE,
        "tool_calls": [tool_call("lookup", '{"q": "Paris"}'), tool_call("run", UNSAFE, "call_2")],
    },
}

# Fields no check covers: the answer is allowed, they are dropped (and reported), never passed on.
DROPPED_FIELDS = {
    "message_annotations": (
        answer(
            {"content": SAFE, "annotations": [{"type": "url_citation", "url_citation": {"title": UNSAFE}}]}
        ),
        "message.annotations",
    ),
    "choice_extra": (
        answer(
            choices=[{"index": 0, "message": {"role": "assistant", "content": SAFE}, "stop_reason": UNSAFE}]
        ),
        "choice.stop_reason",
    ),
    "top_level_extra": (
        answer({"content": SAFE}, prompt_logprobs=[{"1": {"decoded_token": UNSAFE}}]),
        "prompt_logprobs",
    ),
    "top_logprobs": (
        answer(
            choices=[
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": SAFE},
                    "logprobs": {"content": token_logprobs(SAFE, alternatives=UNSAFE_WORD)},
                    "finish_reason": "stop",
                }
            ]
        ),
        "logprobs.content.top_logprobs",
    ),
    "second_choice": (
        answer(
            choices=[
                {"index": 0, "message": {"role": "assistant", "content": SAFE}, "finish_reason": "stop"},
                {"index": 1, "message": {"role": "assistant", "content": UNSAFE}, "finish_reason": "stop"},
            ]
        ),
        "choices[1]",
    ),
    "usage_text": (answer({"content": SAFE}, usage={"prompt_tokens": 3, "note": UNSAFE}), "usage.note"),
    "finish_reason_text": (
        answer(
            choices=[{"index": 0, "message": {"role": "assistant", "content": SAFE}, "finish_reason": UNSAFE}]
        ),
        "choice.finish_reason",
    ),
    "id_text": (answer({"content": SAFE}, id=UNSAFE), "id"),
}


@pytest.mark.parametrize("field", sorted(CHECKED_FIELDS))
def test_text_in_any_field_is_checked(running, field):
    url, db, _ = running
    body = ask(x_upstream={"answer": answer(CHECKED_FIELDS[field])})
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    assert response.status_code == 200 and UNSAFE_WORD not in response.text
    assert response.headers["x-seawall-action"] == "block"
    choice = response.json()["choices"][0]
    assert choice == {
        "index": 0,
        "message": {"role": "assistant", "content": DEFAULT_REFUSAL},
        "finish_reason": "content_filter",
    }
    (row,) = rows(db, response.headers["x-request-id"])
    assert row["action"] == "block"


@pytest.mark.parametrize("field", sorted(DROPPED_FIELDS))
def test_unchecked_fields_are_dropped_and_reported(running, field):
    url, db, _ = running
    upstream_answer, reported = DROPPED_FIELDS[field]
    response = httpx.post(
        f"{url}/v1/chat/completions", json=ask(x_upstream={"answer": upstream_answer}), timeout=10
    )
    assert response.status_code == 200 and UNSAFE_WORD not in response.text
    assert response.headers["x-seawall-action"] == "allow"
    out = response.json()
    assert len(out["choices"]) == 1 and out["choices"][0]["message"]["content"] == SAFE
    assert reported in out["seawall"]["dropped"]
    (row,) = rows(db, response.headers["x-request-id"])
    assert row["action"] == "allow"


def test_blocked_answer_keeps_no_extra(running):
    url, _, _ = running
    message = {
        "content": UNSAFE,
        "reasoning_content": "thinking about it",
        "tool_calls": [tool_call("run", '{"step": 1}')],
        "audio": {"id": "audio_1", "data": "UklGRg==", "expires_at": 1, "transcript": UNSAFE},
    }
    choice = {
        "index": 0,
        "message": {"role": "assistant", **message},
        "logprobs": {"content": token_logprobs(UNSAFE)},
        "finish_reason": "tool_calls",
    }
    upstream_answer = answer(choices=[choice], system_fingerprint="fp_1", usage={"prompt_tokens": 3})
    response = httpx.post(
        f"{url}/v1/chat/completions", json=ask(x_upstream={"answer": upstream_answer}), timeout=10
    )
    out = response.json()
    assert UNSAFE_WORD not in response.text and UNSAFE_WORD[:5] not in response.text
    assert out["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": DEFAULT_REFUSAL},
            "finish_reason": "content_filter",
        }
    ]
    assert set(out) == {
        "id",
        "object",
        "created",
        "model",
        "system_fingerprint",
        "usage",
        "choices",
        "seawall",
    }
    assert out["seawall"]["action"] == "block"


def test_allowed_answer_keeps_every_checked_field(running):
    url, _, _ = running
    message = {
        "content": SAFE,
        "reasoning_content": "The user asks about geography.",
        "tool_calls": [tool_call("lookup", '{"city": "Paris"}')],
    }
    choice = {
        "index": 0,
        "message": {"role": "assistant", **message},
        "logprobs": {"content": token_logprobs(SAFE)},
        "finish_reason": "tool_calls",
    }
    upstream_answer = answer(
        choices=[choice], usage={"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12}
    )
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    out = client.chat.completions.create(
        model="up",
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"x_upstream": {"answer": upstream_answer}},
    )
    got = out.choices[0]
    assert got.message.content == SAFE and got.finish_reason == "tool_calls"
    assert got.message.tool_calls[0].function.arguments == '{"city": "Paris"}'
    assert got.message.tool_calls[0].id == "call_1"
    assert got.message.model_extra["reasoning_content"] == message["reasoning_content"]
    assert "".join(t.token for t in got.logprobs.content) == SAFE
    assert out.usage.total_tokens == 12


class AllWordsDetector(KeywordDetector):
    """Unsafe only when every word occurs in the response: harm split across fields is caught only jointly."""

    def __init__(self, words: tuple[str, ...]) -> None:
        super().__init__()
        self.words = words

    def predict_proba(self, pairs):
        p = [0.9 if all(w in r for w in self.words) else 0.1 for _, r in pairs]
        return [[1 - x, x] for x in p]

    def predict_category(self, pairs, scores=None, threshold=None):
        return [None for _ in pairs]


def test_fields_are_also_checked_together(tmp_path, scripted):
    detector = AllWordsDetector(("fuse", "charge"))
    split = answer({"content": "Light the fuse.", "reasoning_content": "Put it next to the charge."})
    with proxy(tmp_path, scripted[0], detector=detector) as (url, _, _):
        response = httpx.post(
            f"{url}/v1/chat/completions", json=ask(x_upstream={"answer": split}), timeout=10
        )
        assert response.headers["x-seawall-action"] == "block" and "fuse" not in response.text
        chunks = stream_chunks(split["choices"][0]["message"])
        streamed = httpx.post(
            f"{url}/v1/chat/completions", json=ask(stream=True, x_upstream={"chunks": chunks}), timeout=10
        )
        assert "charge" not in streamed.text and sse(streamed)[-1]["seawall"]["action"] == "block"


def stream_chunks(
    message: dict, piece: int = 6, finish: str = "stop", extra_choice: dict | None = None
) -> list[dict]:
    """The chunks an upstream streams for `message`: each text field in `piece`-character deltas."""
    base = {"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "up"}

    def chunk(delta: dict, finish_reason: str | None = None, **extra) -> dict:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason, **extra}]}

    out = [chunk({"role": "assistant"})]
    for field in ("reasoning_content", "reasoning", "refusal", "content"):
        text = message.get(field) or ""
        out += [chunk({field: text[i : i + piece]}) for i in range(0, len(text), piece)]
    for index, call in enumerate(message.get("tool_calls") or []):
        name, arguments = call["function"]["name"], call["function"]["arguments"]
        head = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        out.append(chunk({"tool_calls": [head]}))
        for i in range(0, len(arguments), piece):
            out.append(
                chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[i : i + piece]}}]})
            )
    if extra_choice:
        out.append({**base, "choices": [extra_choice]})
    out.append(chunk({}, finish))
    return out


def streamed_message(chunks: list[dict]) -> tuple[dict, str | None]:
    """Reassemble what a client sees from the proxy's chunks: text fields, tool calls and the finish reason."""
    fields: dict[str, str] = {}
    calls: dict[int, dict] = {}
    finish = None
    for item in chunks:
        for choice in item.get("choices") or []:
            assert choice["index"] == 0
            finish = choice.get("finish_reason") or finish
            delta = choice.get("delta") or {}
            for key in ("content", "reasoning_content", "reasoning", "refusal"):
                if delta.get(key):
                    fields[key] = fields.get(key, "") + delta[key]
            for call in delta.get("tool_calls") or []:
                into = calls.setdefault(call["index"], {"id": None, "name": "", "arguments": ""})
                into["id"] = call.get("id") or into["id"]
                into["name"] += (call.get("function") or {}).get("name") or ""
                into["arguments"] += (call.get("function") or {}).get("arguments") or ""
    if calls:
        fields["tool_calls"] = [calls[i] for i in sorted(calls)]
    return fields, finish


def test_stream_passes_checked_tool_calls_and_reasoning(running):
    url, db, _ = running
    message = {
        "reasoning_content": "The user wants the weather, so I call the tool.",
        "content": "Let me look that up.",
        "tool_calls": [tool_call("get_weather", '{"city": "Paris", "unit": "celsius"}')],
    }
    body = ask(stream=True, x_upstream={"chunks": stream_chunks(message, finish="tool_calls")})
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    fields, finish = streamed_message(sse(response))
    assert finish == "tool_calls"
    assert (
        fields["reasoning_content"] == message["reasoning_content"]
        and fields["content"] == message["content"]
    )
    assert fields["tool_calls"] == [
        {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'}
    ]
    (row,) = rows(db, response.headers["x-request-id"])
    assert row["action"] == "allow" and row["stream"] == 1
    # The official client assembles the same tool call from the proxy's deltas.
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    args = ""
    stream = client.chat.completions.create(
        model="up",
        messages=[{"role": "user", "content": "hi"}],
        stream=True,
        extra_body={"x_upstream": body["x_upstream"]},
    )
    for item in stream:
        for call in (item.choices[0].delta.tool_calls or []) if item.choices else []:
            args += call.function.arguments or ""
    assert args == '{"city": "Paris", "unit": "celsius"}'


@pytest.mark.parametrize(
    "message",
    [
        {"content": None, "tool_calls": [tool_call("run", json.dumps({"step": UNSAFE}))]},
        {"content": None, "tool_calls": [tool_call(UNSAFE, "{}")]},
        {"reasoning_content": UNSAFE, "content": SAFE},
        {"reasoning": UNSAFE, "content": SAFE},
        {"refusal": UNSAFE},
    ],
    ids=["tool_arguments", "tool_name", "reasoning_content", "reasoning", "refusal"],
)
def test_stream_blocks_unsafe_text_in_any_field(running, message):
    url, db, _ = running
    body = ask(stream=True, x_upstream={"chunks": stream_chunks(message)})
    response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)
    chunks = sse(response)
    assert UNSAFE_WORD not in response.text
    fields, finish = streamed_message(chunks)
    assert finish == "content_filter" and fields["content"].endswith(DEFAULT_REFUSAL)
    assert chunks[-1]["seawall"]["action"] == "block"
    (row,) = rows(db, response.headers["x-request-id"])
    assert row["action"] == "block"


def test_stream_drops_and_reports_what_it_cannot_check(running):
    url, _, _ = running
    chunks = stream_chunks(
        {"content": SAFE},
        extra_choice={"index": 1, "delta": {"content": UNSAFE}, "finish_reason": None},
    )
    chunks[1]["choices"][0]["logprobs"] = {
        "content": token_logprobs(chunks[1]["choices"][0]["delta"]["content"], UNSAFE_WORD)
    }
    chunks[2]["choices"][0]["delta"]["annotations"] = [{"title": UNSAFE}]
    chunks.append(
        {
            "id": "up-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "up",
            "choices": [],
            "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12},
        }
    )
    response = httpx.post(
        f"{url}/v1/chat/completions", json=ask(stream=True, x_upstream={"chunks": chunks}), timeout=10
    )
    out = sse(response)
    assert UNSAFE_WORD not in response.text
    assert streamed_message(out) == ({"content": SAFE}, "stop")
    dropped = out[-1]["seawall"]["dropped"]
    assert {"choices[1]", "chunk.logprobs", "delta.annotations"} <= set(dropped)
    assert out[-1]["usage"]["total_tokens"] == 12  # token counts are not text: kept


def completion(text: str, logprobs: dict | None = None, **choice) -> dict:
    first = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "stop", **choice}
    return {"id": "up-1", "object": "text_completion", "created": 1, "model": "up", "choices": [first]}


def completion_logprobs(text: str, alternatives: bool) -> dict:
    tokens = [text[i : i + 5] for i in range(0, len(text), 5)]
    return {
        "tokens": tokens,
        "token_logprobs": [-0.1] * len(tokens),
        "top_logprobs": [{UNSAFE_WORD: -2.0} for _ in tokens] if alternatives else None,
        "text_offset": [5 * i for i in range(len(tokens))],
    }


def test_completions_echo_and_logprobs(running):
    url, _, _ = running
    post = lambda script: httpx.post(  # noqa: E731
        f"{url}/v1/completions",
        json={"model": "up", "prompt": "hi", "echo": True, "logprobs": 5, "x_upstream": script},
        timeout=10,
    )
    blocked = post(
        {"answer": completion("hi" + UNSAFE, completion_logprobs("hi" + UNSAFE, alternatives=False))}
    )
    assert UNSAFE_WORD not in blocked.text and UNSAFE_WORD[:5] not in blocked.text
    assert blocked.json()["choices"] == [
        {"index": 0, "text": DEFAULT_REFUSAL, "logprobs": None, "finish_reason": "content_filter"}
    ]
    allowed = post({"answer": completion("hi" + SAFE, completion_logprobs("hi" + SAFE, alternatives=True))})
    assert UNSAFE_WORD not in allowed.text
    logprobs = allowed.json()["choices"][0]["logprobs"]
    assert "".join(logprobs["tokens"]) == "hi" + SAFE and logprobs["top_logprobs"] is None
    assert "logprobs.top_logprobs" in allowed.json()["seawall"]["dropped"]
    base = {"id": "up-1", "object": "text_completion", "created": 1, "model": "up"}
    chunks = [
        {
            **base,
            "choices": [
                {
                    "index": 0,
                    "text": UNSAFE[i : i + 6],
                    "logprobs": completion_logprobs(UNSAFE[i : i + 6], True),
                    "finish_reason": None,
                }
            ],
        }
        for i in range(0, len(UNSAFE), 6)
    ]
    streamed = httpx.post(
        f"{url}/v1/completions",
        json={"model": "up", "prompt": "hi", "stream": True, "x_upstream": {"chunks": chunks}},
        timeout=10,
    )
    assert (
        UNSAFE_WORD not in streamed.text
        and sse(streamed)[-1]["choices"][0]["finish_reason"] == "content_filter"
    )


def test_n_above_one_is_refused(running):
    url, _, _ = running
    response = httpx.post(f"{url}/v1/chat/completions", json=ask(n=2), timeout=10)
    assert response.status_code == 400 and response.json()["error"]["param"] == "n"


def test_max_completion_tokens_is_limited_like_max_tokens(tmp_path, scripted):
    upstream_url, upstream = scripted
    with proxy(tmp_path, upstream_url, max_tokens=100) as (url, _, _):
        huge = httpx.post(f"{url}/v1/chat/completions", json=ask(max_completion_tokens=10**6), timeout=10)
        assert huge.status_code == 400 and huge.json()["error"]["param"] == "max_completion_tokens"
        ok = httpx.post(f"{url}/v1/chat/completions", json=ask(max_completion_tokens=10), timeout=10)
        assert ok.status_code == 200
    sent = upstream.state.bodies[-1]
    # Also as max_tokens, for upstreams that only read that one.
    assert sent["max_completion_tokens"] == 10 and sent["max_tokens"] == 10


def test_classify_counts_in_flight_and_caps_characters(tmp_path, scripted):
    async def run(url):
        async with httpx.AsyncClient(timeout=10) as client:
            slow = asyncio.create_task(
                client.post(
                    f"{url}/v1/chat/completions",
                    json=ask("slow", x_upstream={"answer": answer({"content": "slowpoke"})}),
                )
            )
            await asyncio.sleep(0.3)
            pairs = [{"prompt": "q", "response": "fine"}]
            rejected = await client.post(f"{url}/v1/classify", json={"pairs": pairs})
            return await slow, rejected

    detector = KeywordDetector(delay=0.8, delay_on="slowpoke")
    with proxy(tmp_path, scripted[0], detector=detector, max_concurrency=1) as (url, _, _):
        first, rejected = asyncio.run(run(url))
        assert first.status_code == 200 and rejected.status_code == 429
    with proxy(tmp_path / "chars", scripted[0], classify_max_chars=1000) as (url, _, _):
        big = {"pairs": [{"prompt": "q", "response": "x" * 600}, {"prompt": "q", "response": "y" * 600}]}
        response = httpx.post(f"{url}/v1/classify", json=big, timeout=10)
        assert response.status_code == 413 and response.json()["error"]["param"] == "pairs"
        many = {"pairs": [{"response": "x"}] * 2000}
        assert httpx.post(f"{url}/v1/classify", json=many, timeout=10).status_code == 400


def test_hung_classify_calls_do_not_starve_proxied_checks(tmp_path, scripted):
    async def run(url):
        async with httpx.AsyncClient(timeout=10) as client:
            hung = [{"prompt": "q", "response": "slowpoke"}]
            calls = [client.post(f"{url}/v1/classify", json={"pairs": hung}) for _ in range(6)]
            classified = await asyncio.gather(*calls)
            chat = await client.post(
                f"{url}/v1/chat/completions", json=ask(x_upstream={"answer": answer({"content": SAFE})})
            )
            return classified, chat

    detector = KeywordDetector(delay=3.0, delay_on="slowpoke")
    with proxy(tmp_path, scripted[0], detector=detector, policy={"timeout_s": 0.3}) as (url, _, _):
        classified, chat = asyncio.run(run(url))
    assert all(r.json()["results"][0]["error"] for r in classified)  # the hung detector timed out (closed)
    assert (
        chat.headers["x-seawall-action"] == "allow"
        and chat.json()["choices"][0]["message"]["content"] == SAFE
    )


# Property-based: request bodies generated from the app's OpenAPI schema (valid and invalid), upstream answers
# drawn from every field shape above, unsafe text anywhere. Invariants: no 5xx, the unsafe word never reaches the
# client, and every answered decision is exactly one audit row.
TEXT = st.sampled_from([SAFE, UNSAFE, "", "ok", f"half a {UNSAFE_WORD[:4]}"])
TOOL_CALL = st.builds(
    lambda n, a, i: tool_call(n, a, f"call_{i}"),
    st.sampled_from(["run", "lookup", UNSAFE]),
    TEXT,
    st.integers(0, 3),
)
MESSAGE = st.fixed_dictionaries(
    {"content": st.none() | TEXT},
    optional={
        "refusal": TEXT,
        "reasoning_content": TEXT,
        "reasoning": TEXT,
        "tool_calls": st.lists(TOOL_CALL, max_size=2),
        "audio": st.builds(
            lambda t: {"id": "a1", "data": "UklGRg==", "expires_at": 1, "transcript": t}, TEXT
        ),
        "annotations": st.just([{"type": "url_citation", "url_citation": {"title": UNSAFE}}]),
        "unknown_text": TEXT,
    },
)


@st.composite
def chat_script(draw) -> dict:
    message = draw(MESSAGE)
    extra = draw(st.none() | st.fixed_dictionaries({"index": st.integers(1, 3), "message": MESSAGE}))
    first = {
        "index": 0,
        "message": {"role": "assistant", **message},
        "finish_reason": draw(st.sampled_from(["stop", "tool_calls", UNSAFE])),
    }
    if draw(st.booleans()):
        first["logprobs"] = {"content": token_logprobs(message.get("content") or "", draw(st.none() | TEXT))}
    choices = [first] + ([{**extra, "finish_reason": "stop"}] if extra else [])
    extra_choice = {"index": extra["index"], "delta": {"content": UNSAFE}} if extra else None
    return {
        "answer": answer(choices=choices, usage={"prompt_tokens": 1, "note": draw(TEXT)}),
        "chunks": stream_chunks(message, piece=draw(st.integers(1, 40)), extra_choice=extra_choice),
    }


@st.composite
def completion_script(draw) -> dict:
    text = draw(TEXT)
    logprobs = draw(st.none() | st.builds(lambda alt: completion_logprobs(text, alt), st.booleans()))
    base = {"id": "up-1", "object": "text_completion", "created": 1, "model": "up"}
    piece = draw(st.integers(1, 40))
    chunks = [
        {**base, "choices": [{"index": 0, "text": text[i : i + piece], "finish_reason": None}]}
        for i in range(0, len(text), piece)
    ]
    return {"answer": completion(text, logprobs), "chunks": chunks}


def operation_cases(app, path: str):
    operation = schemathesis.openapi.from_dict(app.openapi())[path]["POST"]
    valid, invalid = (
        operation.as_strategy(mode) for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    )
    return st.one_of(valid, valid, invalid)  # two thirds valid: most examples reach the upstream


FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,  # the same examples on every run: CI must not turn flaky on a newly drawn body
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


def check_fuzzed(url: str, db: str, path: str, body, expected_rows) -> None:
    if body is NOT_SET or isinstance(body, bytes | str):  # negative cases: no body, or not JSON at all
        content = b"" if body is NOT_SET else body
        response = httpx.post(
            f"{url}{path}", content=content, headers={"content-type": "application/json"}, timeout=10
        )
    else:
        response = httpx.post(f"{url}{path}", json=body, timeout=10)
    assert response.status_code < 500, response.text
    assert UNSAFE_WORD not in response.text
    rid = response.headers["x-request-id"]
    conn = sqlite3.connect(db)
    count = conn.execute(
        "SELECT COUNT(*) FROM decisions WHERE request_id = ? OR request_id LIKE ?", (rid, rid + ":%")
    ).fetchone()[0]
    conn.close()
    assert count == (expected_rows(response) if response.status_code == 200 else 0)


@pytest.mark.parametrize(
    ("path", "script"), [("/v1/chat/completions", chat_script()), ("/v1/completions", completion_script())]
)
def test_fuzzed_requests_and_answers(running, path, script):
    url, db, app = running

    @FUZZ
    @given(case=operation_cases(app, path), upstream_script=script, stream=st.booleans())
    def run(case, upstream_script, stream):
        body = case.body
        if isinstance(body, dict):
            # Half the bodies stream whatever the schema drew: both paths get most examples.
            body = {**body, "x_upstream": upstream_script, **({"stream": True} if stream else {})}
        check_fuzzed(url, db, path, body, lambda _: 1)

    run()


def test_fuzzed_classify(running):
    url, db, app = running

    @FUZZ
    @given(case=operation_cases(app, "/v1/classify"))
    def run(case):
        check_fuzzed(url, db, "/v1/classify", case.body, lambda response: len(response.json()["results"]))

    run()


def test_fuzzed_moderations(running):
    url, db, app = running

    @FUZZ
    @given(case=operation_cases(app, "/v1/moderations"))
    def run(case):
        check_fuzzed(url, db, "/v1/moderations", case.body, lambda response: len(response.json()["results"]))

    run()


def test_a_streamed_chunk_whose_choices_is_not_a_list_is_dropped_not_fatal(running):
    # Found by CI's property test: `"choices": true` in a chunk crashed the proxy's stream loop mid-answer.
    url, _, _ = running
    chunks = stream_chunks({"content": "Bread needs flour, water and time."})
    chunks.insert(
        2, {"id": "up-1", "object": "chat.completion.chunk", "created": 1, "model": "up", "choices": True}
    )
    streamed = httpx.post(
        f"{url}/v1/chat/completions", json=ask(stream=True, x_upstream={"chunks": chunks}), timeout=10
    )
    events = sse(streamed)
    assert streamed.status_code == 200 and events[-1]["seawall"]["action"] == "allow"
    assert streamed_message(events)[0]["content"] == "Bread needs flour, water and time."
    assert "choices" in events[-1]["seawall"]["dropped"]
