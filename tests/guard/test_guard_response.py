"""The allow-list itself, on arbitrary JSON built from OpenAI field names: nothing unchecked is ever released."""

from __future__ import annotations

import json

from hypothesis import example, given, settings
from hypothesis import strategies as st

from seawall.guard.response import (
    CHAT,
    COMPLETIONS,
    ChunkFields,
    Dropped,
    InvalidAnswer,
    chunk_choices,
    envelope_of,
    joined,
    read_answer,
    usage_of,
)

UNSAFE = "connect the wire to the charge"  # spaces: no identifier can hold it
KEYS = [
    *("id", "model", "object", "created", "system_fingerprint", "service_tier", "usage", "prompt_tokens"),
    *("choices", "index", "message", "delta", "role", "content", "refusal", "reasoning", "reasoning_content"),
    *("tool_calls", "type", "function", "name", "arguments", "function_call", "audio", "data", "transcript"),
    *("expires_at", "logprobs", "top_logprobs", "token", "bytes", "tokens", "token_logprobs", "text_offset"),
    *("text", "finish_reason", "annotations", "stop_reason", "prompt_logprobs"),
]
LEAVES = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.sampled_from([UNSAFE, "Paris", "", "stop", "function", "call_1", "tool_calls", "UklGRg=="])
)
JSON = st.recursive(
    LEAVES,
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(KEYS), children, max_size=6)
    ),
    max_leaves=25,
)


def shaped(message_key: str):
    """Answers that look like the real thing often enough to reach every branch."""
    extra = st.dictionaries(st.sampled_from(KEYS), JSON, max_size=4)
    choice = st.builds(lambda more, body: {**more, "index": 0, message_key: body}, extra, JSON)
    return st.builds(
        lambda more, choices: {**more, "choices": choices},
        extra,
        st.lists(choice | JSON, min_size=1, max_size=3),
    )


@settings(max_examples=200, deadline=None, derandomize=True)  # CI must not turn flaky
@given(path=st.sampled_from([CHAT, COMPLETIONS]), obj=shaped("message") | shaped("text") | JSON)
@example(
    path=CHAT, obj={"choices": [{"index": 0, "message": {"audio": {"data": UNSAFE, "transcript": "hi"}}}]}
)
def test_released_text_was_checked(path, obj):
    try:
        answer = read_answer(path, obj)
    except InvalidAnswer:
        return
    checked = joined(answer.texts)
    if UNSAFE in json.dumps(answer.released()):
        assert UNSAFE in checked
    assert UNSAFE not in json.dumps(answer.blocked("refused"))
    assert all(UNSAFE not in name for name in answer.dropped)


@settings(max_examples=200, deadline=None, derandomize=True)  # CI must not turn flaky
@given(path=st.sampled_from([CHAT, COMPLETIONS]), chunk=shaped("delta") | shaped("text") | JSON)
@example(path=CHAT, chunk={"choices": True})  # found by CI: a non-list `choices` crashed the stream loop
def test_streamed_chunks_release_only_their_pieces(path, chunk):
    fields, dropped = ChunkFields(path), Dropped()
    if not isinstance(chunk, dict):
        return
    assert UNSAFE not in json.dumps(envelope_of(path, chunk, dropped, chunk=True))
    assert UNSAFE not in json.dumps(usage_of(chunk.get("usage"), dropped))
    pieces = []
    for choice in chunk_choices(chunk, dropped):
        if isinstance(choice, dict):
            pieces += fields.pieces(choice, dropped)
    out = json.dumps(fields.choice(pieces, None))
    if UNSAFE in out:
        assert any(UNSAFE in text for _, text in pieces)
